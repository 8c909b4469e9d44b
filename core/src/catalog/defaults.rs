//! The flows and mappings built into the binary, so `zmanager up` runs with
//! no files around it. They are the files of the repository's `flows/` and
//! `action_mappings/` directories (a test checks that none is missing).

use crate::catalog::source::{Format, SourceFile};

macro_rules! embedded {
    ($dir:literal, $($name:literal => $format:ident),* $(,)?) => {
        vec![$(SourceFile::new(
            concat!("<built-in>/", $dir, "/", $name),
            include_str!(concat!("../../../", $dir, "/", $name)),
            Format::$format,
        )),*]
    };
}

/// The built-in flow files.
pub fn flows() -> Vec<SourceFile> {
    embedded!(
        "flows",
        "announce.ini" => Ini,
        "echo.toml" => Toml,
        "greeting.ini" => Ini,
        "review.ini" => Ini,
        "secure_greeting.ini" => Ini,
        "service_management.ini" => Ini,
    )
}

/// The built-in action-mapping files.
pub fn mappings() -> Vec<SourceFile> {
    embedded!(
        "action_mappings",
        "greeter.toml" => Toml,
        "iam.ini" => Ini,
        "review.ini" => Ini,
        "text.ini" => Ini,
    )
}
