//! `ussd-baseline`: the yardstick for the USSD load test. A minimal hyper server that does,
//! per request, what any Redis-backed USSD gateway must do at least: one Redis GET of the
//! session and one SET EX of it, then a `CON` reply. No parsing beyond the session id, no
//! flow, no durable answers. The gateway's steps/s divided by this server's requests/s,
//! loaded the same way in the same run, is the ratio `load-tests/RESULTS.md` reports.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

async fn handle(
    redis: ConnectionManager,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let session = body
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(b"sessionId="))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_default();
    let key = format!("baseline:{{{session}}}");
    let mut conn = redis;
    let previous: Option<Vec<u8>> = conn.get(&key).await.unwrap_or(None);
    let mut state = previous.unwrap_or_default();
    state.truncate(200);
    state.push(b'.');
    let _: Result<(), _> = conn.set_ex(&key, state, 180).await;
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"CON ok")))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis = ConnectionManager::new(redis::Client::open(args.redis.as_str())?).await?;
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let redis = redis.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(redis.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
