//! Generates Rust code with micro-codegen (no protoc needed): the shippy protos the
//! examples use, and the sample protos of the code generator's tests.

fn main() -> Result<(), micro_codegen::Error> {
    micro_codegen::Builder::new()
        // The CLI reads consignments from JSON.
        .serde(true)
        .compile(
            &[
                "examples/vessel/proto/vessel.proto",
                "examples/consignment/proto/consignment.proto",
                "tests/proto/micro/test/v1/shapes.proto",
            ],
            &[
                "examples/vessel/proto",
                "examples/consignment/proto",
                "tests/proto",
            ],
        )
}
