//! What micro-codegen writes, and how it reports broken protos.
//!
//! The snapshot is the generated code of `tests/proto/micro/test/v1/shapes.proto`,
//! micro-codegen's own sample protos (the root crate's `build.rs` compiles the same
//! files, and `tests/shapes.rs` runs what it generates over sockets). After an intended
//! change to the generator, refresh it with `UPDATE_SNAPSHOTS=1 cargo test -p micro-codegen`.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("micro-codegen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The include directory of this crate's sample protos.
fn protos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto")
}

#[test]
fn generated_code_matches_the_snapshot() {
    let out = scratch("snapshot");
    micro_codegen::Builder::new()
        .out_dir(&out)
        .compile(&[protos().join("micro/test/v1/shapes.proto")], &[protos()])
        .unwrap();
    for file in [
        "micro.test.v1.rs",
        "micro.test.common.rs",
        "_micro_protos.rs",
    ] {
        let generated = std::fs::read_to_string(out.join(file)).unwrap();
        let snapshot = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(file);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&snapshot, &generated).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        assert!(
            generated == expected,
            "{file} differs from its snapshot; if the change is intended, run UPDATE_SNAPSHOTS=1 cargo test -p micro-codegen"
        );
    }
    let code = std::fs::read_to_string(out.join("micro.test.v1.rs")).unwrap();
    // protoc-gen-micro's names, and no unwraps in generated code.
    for name in [
        "pub trait ShapesHandler",
        "pub fn shapes_handler",
        "pub struct ShapesService",
        "pub struct PingService",
        "pub trait PingServiceHandler",
        "pub fn ping_service_handler",
        // Every message says it has a JSON form, nested ones included.
        "::micro_core::json_message!(\n    Note,\n    note::Tag,\n    Summary,\n);",
        "pub const FILE_DESCRIPTOR_SET",
    ] {
        assert!(code.contains(name), "missing {name}");
    }
    assert!(!code.contains("unwrap()") && !code.contains("expect("));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn without_serde_every_message_is_protobuf_only() {
    let out = scratch("no-serde");
    micro_codegen::Builder::new()
        .serde(false)
        .out_dir(&out)
        .compile(&[protos().join("micro/test/v1/shapes.proto")], &[protos()])
        .unwrap();
    let code = std::fs::read_to_string(out.join("micro.test.v1.rs")).unwrap();
    for message in ["Note", "note::Tag", "Summary"] {
        let line = format!("impl ::micro_core::Message for {message} {{}}");
        assert!(code.contains(&line), "missing {line}");
    }
    assert!(!code.contains("json_message!") && !code.contains("serde"));
    let common = std::fs::read_to_string(out.join("micro.test.common.rs")).unwrap();
    assert!(common.contains("impl ::micro_core::Message for Page {}"));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_broken_proto_is_reported_with_file_line_and_column() {
    let dir = scratch("broken");
    std::fs::write(
        dir.join("broken.proto"),
        "syntax = \"proto3\";\npackage broken;\n\nmessage Thing {\n  string name = 1\n}\n",
    )
    .unwrap();
    let err = micro_codegen::Builder::new()
        .out_dir(&dir)
        .compile(&[dir.join("broken.proto")], &[&dir])
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, micro_codegen::Error::Proto(_)));
    assert!(text.starts_with("broken.proto:6:1:"), "{text}");
    assert!(text.contains("expected ';'"), "{text}");
    // Debug shows the same text, so build.rs returning the error prints it readably.
    assert_eq!(format!("{err:?}"), text);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_import_names_the_file() {
    let dir = scratch("import");
    std::fs::write(
        dir.join("a.proto"),
        "syntax = \"proto3\";\npackage a;\nimport \"nowhere/b.proto\";\n",
    )
    .unwrap();
    let err = micro_codegen::Builder::new()
        .out_dir(&dir)
        .compile(&[dir.join("a.proto")], &[&dir])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.proto:3:1") && err.contains("nowhere/b.proto"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn outside_build_rs_without_an_out_dir_is_a_clear_error() {
    if std::env::var_os("OUT_DIR").is_some() {
        return; // cargo set one for this test binary: nothing to check here
    }
    let err = micro_codegen::compile(&["x.proto"], &["."]).unwrap_err();
    assert!(matches!(err, micro_codegen::Error::NoOutDir));
}
