//! The generated code compiles without a warning in a user's crate, whichever parts it
//! uses: `tests/fixtures/greeter` is such a crate (outside the workspace), with
//! binaries that use only the server side, only the client, both, or neither, and a
//! library that makes the generated modules public under `#![deny(missing_docs)]`
//! and other strict lints. It is built with `RUSTFLAGS=-D warnings`.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn a_users_crate_builds_without_a_warning_whatever_it_uses() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = manifest.join("tests/fixtures/greeter");
    // The workspace's lock file keeps the fixture on the versions the workspace is
    // built with (and lets it build offline, from what the workspace fetched).
    std::fs::copy(
        manifest.join("../../Cargo.lock"),
        fixture.join("Cargo.lock"),
    )
    .unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("greeter-fixture");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--offline", "--lib", "--bins", "--manifest-path"])
        .arg(fixture.join("Cargo.toml"))
        .env("RUSTFLAGS", "-D warnings")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the fixture failed to build:\n{stderr}"
    );
    assert!(
        !stderr.contains("warning:"),
        "the fixture built with warnings:\n{stderr}"
    );
    for bin in ["service-only", "client-only", "both", "neither"] {
        let path = target
            .join("debug")
            .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
        assert!(path.is_file(), "{} was not built", path.display());
    }
}
