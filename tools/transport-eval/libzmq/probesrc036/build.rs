fn main() {
    let mut b = zeromq_src::Build::new();
    if std::env::var("WITH_SODIUM").is_ok() {
        b.with_libsodium(Some(zeromq_src::LibLocation::new(
            "/usr/lib/x86_64-linux-gnu", "/usr/include")));
    }
    b.build();
    println!("cargo:rerun-if-env-changed=WITH_SODIUM");
}
