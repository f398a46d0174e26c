use micro_core::Client;

mod greeter { micro_core::include_proto!("greeter"); }
use greeter::{GreeterService, Request};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The same MICRO_* variables as a service; no Service needed to call one.
    let greeter = GreeterService::new("go.micro.srv.greeter", Client::from_env()?);
    let reply = greeter.hello(Request { name: "John".into() }).await?;
    println!("{}", reply.msg);
    Ok(())
}
