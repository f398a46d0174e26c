use micro_core::{Context, Error, Service, ServiceError};

mod greeter { micro_core::include_proto!("greeter"); }
use greeter::{greeter_handler, GreeterHandler, Request, Response};

struct Greeter;

#[micro_core::async_trait]
impl GreeterHandler for Greeter {
    async fn hello(&self, _ctx: Context, req: Request) -> Result<Response, Error> {
        Ok(Response { msg: format!("Hello {}", req.name) })
    }
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    Service::new("go.micro.srv.greeter")? // reads MICRO_* once: a bad value fails here
        .handle(greeter_handler(Greeter))?
        .run() // until SIGINT/SIGTERM; deregisters before it exits
        .await
}
