#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one
# after another; exits non-zero if any target crashed or could not be built
# or run, and says where the input that crashed it is.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Environment:
#   FUZZ_JOBS=2              run two targets at a time (default 1)
#   FUZZ_SANITIZER=address   cargo-fuzz's sanitizer (default none)
#   FUZZ_BUILD_FLAGS="..."   more cargo-fuzz flags, e.g. "--codegen-units 16"
#
# New inputs go to fuzz/target/corpus/<target> (not committed; the
# committed seeds in fuzz/corpus/<target> are only read), crashes to
# fuzz/artifacts/<target>/, each target's output to fuzz/target/logs/.
# docs/fuzzing.md says more.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov...);
# the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo-fuzz is missing: cargo install cargo-fuzz --locked"
  if ! cargo install cargo-fuzz --locked; then
    echo "FAILED: cannot install cargo-fuzz, so no fuzz target ran" >&2
    exit 1
  fi
fi

# No sanitizer by default: the code under test is safe Rust (overflow and
# debug assertions stay on), and AddressSanitizer's allocator makes these
# allocation-heavy targets 4 to 8 times slower.
flags=(-s "${FUZZ_SANITIZER:-none}")
# shellcheck disable=SC2206 # word splitting wanted
flags+=(${FUZZ_BUILD_FLAGS:-})

if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

start=$SECONDS
echo "== build ${targets[*]} (${flags[*]})"
if (($# > 0)); then
  for t in "${targets[@]}"; do cargo fuzz build "${flags[@]}" "$t"; done
else
  cargo fuzz build "${flags[@]}"
fi
echo "== built in $((SECONDS - start))s"

mkdir -p target/logs
# The journal target's scratch databases: on a tmpfs where there is one
# (it runs about 2.5 times as many inputs there as on a disk), removed at
# the end.
if [[ -d /dev/shm && -w /dev/shm ]]; then
  scratch=$(mktemp -d /dev/shm/zmanager-fuzz.XXXXXX)
else
  mkdir -p target
  scratch=$(mktemp -d "$PWD/target/tmp.XXXXXX")
fi
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

dict_of() {
  case $1 in
    flows_ini | flows_toml | mappings | catalog) echo dicts/config.dict ;;
    *) [[ -f dicts/$1.dict ]] && echo "dicts/$1.dict" ;;
  esac
  return 0
}

# Runs one target; prints one line of figures, or where its crash is.
run_one() {
  local t=$1 log=target/logs/$1.log dict
  mkdir -p "target/corpus/$t" "corpus/$t"
  local args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  dict=$(dict_of "$t")
  [[ -n $dict ]] && args+=(-dict="$dict")
  if cargo fuzz run "${flags[@]}" "$t" "target/corpus/$t" "corpus/$t" -- "${args[@]}" >"$log" 2>&1; then
    local last execs
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "ok    $t: ${execs:-?} runs; ${last:-no status line}"
  else
    echo "CRASH $t (log: fuzz/$log)"
    # What failed, and the top frames of its stack.
    if grep -q 'panicked at' "$log"; then
      grep -m1 -A1 'panicked at' "$log" | sed 's/^/      /'
      sed -n '/^stack backtrace:/,/rust_fuzzer_test_input/p' "$log" |
        grep -vE '^stack backtrace:|rust_begin_unwind|core::panicking|panicking\.rs|rust_fuzzer_test_input' |
        head -12 | sed 's/^/      /'
    else
      grep -m1 -E '^==[0-9]+== ?ERROR' "$log" | sed 's/^/      /'
      grep -m12 -E '^ +#[0-9]+ ' "$log" | sed 's/^/      /'
    fi
    local unit
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [[ -n $unit ]]; then
      echo "      input: $unit"
      echo "      again: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $unit"
    else
      echo "      no input written: see the log"
      tail -20 "$log" | sed 's/^/      /'
    fi
    return 1
  fi
}

failed=()
jobs_max=${FUZZ_JOBS:-1}
running=()
reap() {
  # Waits for the oldest running target.
  local pid=${running[0]%%:*} t=${running[0]#*:}
  running=("${running[@]:1}")
  if ! wait "$pid"; then failed+=("$t"); fi
}
echo "== run each target for ${seconds}s, $jobs_max at a time"
for t in "${targets[@]}"; do
  run_one "$t" &
  running+=("$!:$t")
  while ((${#running[@]} >= jobs_max)); do reap; done
done
while ((${#running[@]} > 0)); do reap; done

echo "== fuzzing took $((SECONDS - start))s in all"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
  echo "FAILED: ${failed[*]} (inputs under fuzz/artifacts/; docs/fuzzing.md says how to minimize them)" >&2
  exit 1
fi
