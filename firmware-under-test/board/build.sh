#!/usr/bin/env bash
# Builds the board firmware ELF on any machine and prints its path.
#
#   firmware-under-test/board/build.sh [--release|--debug] [--broken-detector|--test-panic]
#
# --broken-detector (detector disabled) and --test-panic (a deliberate panic in the control
# tick at 300 ms) build test-only firmware, marked as a test build in its identity, in a
# separate target directory so it can never overwrite the real ELF, and copy it to
# target/test-builds/iohil-board-<feature>-<profile>.elf.
#
# Picks the toolchain by itself:
#   1. rustup with the thumbv7m-none-eabi target installed: plain `cargo build --target`;
#   2. otherwise Debian's rustc-web/cargo-web/rust-web-src (Rust 1.96, /usr/bin/cargo) with
#      binutils-arm-none-eabi: `core` is built from source with -Zbuild-std=core, which needs
#      RUSTC_BOOTSTRAP=1 (set for this build only), and arm-none-eabi-ld links.
# Output: firmware-under-test/board/target/thumbv7m-none-eabi/<profile>/iohil-board
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7m-none-eabi
PROFILE=release
TARGET_DIR=target
feature=""
feature_flag=()
for arg in "$@"; do
    case "$arg" in
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        --broken-detector) feature=broken-detector ;;
        --test-panic) feature=test-panic ;;
        *) echo "usage: $0 [--release|--debug] [--broken-detector|--test-panic]" >&2; exit 2 ;;
    esac
done
profile_flag=()
[ "$PROFILE" = release ] && profile_flag=(--release)
if [ -n "$feature" ]; then
    TARGET_DIR=target/test-builds
    feature_flag=(--features "$feature")
fi
export CARGO_TARGET_DIR="$PWD/$TARGET_DIR"

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "iohil-board: rustup toolchain with $TARGET" >&2
    cargo build --locked "${profile_flag[@]}" "${feature_flag[@]}" --target "$TARGET"
elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library/core ] \
    && command -v arm-none-eabi-ld >/dev/null 2>&1; then
    echo "iohil-board: Debian toolchain ($(/usr/bin/rustc --version)) with -Zbuild-std=core" >&2
    # The rustup proxies must not pick the host-only toolchain for this build.
    env -u RUSTUP_TOOLCHAIN RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_THUMBV7M_NONE_EABI_LINKER=arm-none-eabi-ld \
        /usr/bin/cargo build --locked "${profile_flag[@]}" "${feature_flag[@]}" --target "$TARGET" -Zbuild-std=core
else
    cat >&2 <<'MSG'
error: no toolchain can build for thumbv7m-none-eabi on this machine.
hint: either `rustup target add thumbv7m-none-eabi`, or (Debian 12)
      `apt-get install rustc-web cargo-web rust-web-src binutils-arm-none-eabi`
MSG
    exit 2
fi
elf="$CARGO_TARGET_DIR/$TARGET/$PROFILE/iohil-board"
if [ -n "$feature" ]; then
    cp "$elf" "$CARGO_TARGET_DIR/iohil-board-$feature-$PROFILE.elf"
    elf="$CARGO_TARGET_DIR/iohil-board-$feature-$PROFILE.elf"
fi
echo "$elf"
