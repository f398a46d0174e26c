fn main() -> Result<(), micro_codegen::Error> {
    micro_codegen::compile(&["proto/greeter.proto"], &["proto"])
}
