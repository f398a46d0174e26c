//! Generates the shippy protos' Rust code with micro-codegen (no protoc needed).

fn main() -> Result<(), micro_codegen::Error> {
    micro_codegen::Builder::new()
        // The CLI reads consignments from JSON.
        .serde(true)
        .compile(
            &[
                "examples/vessel/proto/vessel.proto",
                "examples/consignment/proto/consignment.proto",
            ],
            &["examples/vessel/proto", "examples/consignment/proto"],
        )
}
