//! The HTTP client side of an Africa's Talking USSD callback, shared by the load generators
//! (`ussd-load`, `fault-load`): form encoding, a keep-alive HTTP/1 connection, one callback
//! and its reply body. It never interprets the reply.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `application/x-www-form-urlencoded` component encoding.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive connection to `target` (host:port), without Nagle's delay.
pub async fn connect(target: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One callback (`body`: the form) to `POST /ussd/africastalking`; the reply body.
pub async fn step(sender: &mut Sender, host: &str, body: String) -> anyhow::Result<String> {
    sender.ready().await?;
    let request = Request::post("/ussd/africastalking")
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
