//! Opening a connection to a node by URL: `ws://`, `wss://` (TLS), `tcp://` and `tcps://`
//! (MPREG's length-prefixed TCP transport, [`crate::protocol::frame`]), with credentials on the
//! WebSocket upgrade (`Authorization: Bearer …`, `X-API-Key: …`, as MPREG's clients send them).
//! Every transport is a sink and a stream of WebSocket messages, so the client above it is the
//! same for all four.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::codec::Framed;

use crate::protocol::frame::{Frame, FrameCodec, FrameError};
use crate::tls::ClientTls;

/// How to reach a node beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// What TLS trusts and presents (`wss://`, `tcps://`).
    pub tls: ClientTls,
    /// Sent as `Authorization: Bearer <token>` on the WebSocket upgrade.
    pub auth_token: Option<String>,
    /// Sent as `X-API-Key: <key>` on the WebSocket upgrade.
    pub api_key: Option<String>,
}

/// The sending half of a connection.
pub type MessageSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;
/// The receiving half.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;

/// Which transport a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
    /// `tcp://`
    Tcp,
    /// `tcps://`
    Tcps,
}

impl Scheme {
    fn tls(self) -> bool {
        matches!(self, Scheme::Wss | Scheme::Tcps)
    }
}

/// A parsed node URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The forms every command takes for a node, for error messages.
pub const URL_FORMS: &str =
    "ws://host:port, wss://host:port, tcp://host:port, tcps://host:port, host:port or :port";

/// A node named in any accepted form, as a full URL: `host:port` is `ws://host:port`, `:port`
/// is `ws://127.0.0.1:port`, and `http(s)://` (the admin and metrics port is the same) is
/// `ws(s)://`. Anything else is returned as it is (and [`parse`] says what is wrong with it).
pub fn normalize(node: &str) -> String {
    let node = node.trim();
    if let Some(rest) = node.strip_prefix("http://") {
        return format!("ws://{rest}");
    }
    if let Some(rest) = node.strip_prefix("https://") {
        return format!("wss://{rest}");
    }
    if node.contains("://") {
        return node.to_owned();
    }
    match node.strip_prefix(':') {
        Some(port) => format!("ws://127.0.0.1:{port}"),
        None => format!("ws://{node}"),
    }
}

/// Reads `scheme://host:port[/path]`, or any form [`normalize`] takes.
pub fn parse(url: &str) -> Result<Target, String> {
    let bare = !url.contains("://");
    if bare
        && url
            .trim()
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("'{url}' is not a node URL; use {URL_FORMS}"));
    }
    let url = normalize(url);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a node URL ({e}); use {URL_FORMS}"))?;
    let scheme = match uri.scheme_str() {
        Some("ws") => Scheme::Ws,
        Some("wss") => Scheme::Wss,
        Some("tcp") => Scheme::Tcp,
        Some("tcps") => Scheme::Tcps,
        other => {
            return Err(format!(
                "unsupported scheme {:?} in '{url}'; use {URL_FORMS}",
                other.unwrap_or("")
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| "the URL has no host".to_owned())?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = match (uri.port_u16(), scheme) {
        (Some(p), _) => p,
        (None, Scheme::Ws) => 80,
        (None, Scheme::Wss) => 443,
        (None, _) => return Err("a tcp:// or tcps:// URL needs a port".into()),
    };
    if port == 0 {
        return Err(format!("'{url}' has port 0; use {URL_FORMS}"));
    }
    Ok(Target { scheme, host, port })
}

/// Opens a connection to `url`.
pub async fn open(
    url: &str,
    opts: &ConnectOptions,
) -> Result<(MessageSink, MessageStream), String> {
    let target = parse(url)?;
    let url = &normalize(url);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if target.scheme.tls() {
        let config = opts.tls.config().map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{}: {e}", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        finish(url, target.scheme, tls, opts).await
    } else {
        finish(url, target.scheme, tcp, opts).await
    }
}

async fn finish<IO>(
    url: &str,
    scheme: Scheme,
    io: IO,
    opts: &ConnectOptions,
) -> Result<(MessageSink, MessageStream), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match scheme {
        Scheme::Ws | Scheme::Wss => {
            let mut request = url.into_client_request().map_err(|e| e.to_string())?;
            let headers = request.headers_mut();
            if let Some(token) = &opts.auth_token {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token is not a valid header value".to_owned())?;
                headers.insert("authorization", value);
            }
            if let Some(key) = &opts.api_key {
                let value = HeaderValue::from_str(key)
                    .map_err(|_| "the API key is not a valid header value".to_owned())?;
                headers.insert("x-api-key", value);
            }
            let config = WebSocketConfig::default();
            let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
                .await
                .map_err(describe)?;
            let (sink, stream) = ws.split();
            Ok((Box::pin(sink), Box::pin(stream)))
        }
        Scheme::Tcp | Scheme::Tcps => {
            // Replies can be as large as the node sends (MPREG's clients accept 20 MiB).
            let framed = Framed::new(io, FrameCodec::new(64 << 20));
            let (sink, stream) = framed.split();
            let sink = sink
                .sink_map_err(frame_error)
                .with(|m: Message| async move { Ok::<Bytes, WsError>(payload(m)) });
            let stream = stream.map(|f| match f {
                Ok(Frame::Data(b)) => Ok(Message::Binary(b)),
                Ok(Frame::Ping) => Ok(Message::Ping(Bytes::new())),
                Err(e) => Err(frame_error(e)),
            });
            Ok((Box::pin(sink), Box::pin(stream)))
        }
    }
}

/// What a message is as a TCP frame's payload.
fn payload(m: Message) -> Bytes {
    match m {
        Message::Text(t) => Bytes::from(t),
        Message::Binary(b) => b,
        Message::Ping(_) => Bytes::from_static(crate::protocol::frame::PING),
        Message::Pong(_) => Bytes::from_static(crate::protocol::frame::PONG),
        Message::Close(_) | Message::Frame(_) => Bytes::new(),
    }
}

fn frame_error(e: FrameError) -> WsError {
    match e {
        FrameError::Io(e) => WsError::Io(e),
        other => WsError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, other)),
    }
}

/// A refused upgrade says its HTTP status and the node's reason.
fn describe(e: WsError) -> String {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            format!("HTTP {status}: {}", body.trim())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_transport() {
        let t = parse("tcps://node.example:6667").expect("ok");
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Tcps, "node.example", 6667)
        );
        assert_eq!(parse("wss://h").expect("ok").port, 443);
        assert_eq!(parse("ws://[::1]:9/x").expect("ok").host, "::1");
        assert!(parse("tcp://h").expect_err("port").contains("needs a port"));
        assert!(
            parse("ftp://h:1")
                .expect_err("scheme")
                .contains("unsupported scheme")
        );
    }

    #[test]
    fn every_command_takes_the_same_forms() {
        for (form, want) in [
            ("ws://h:7", ("h", 7, Scheme::Ws)),
            ("h:7", ("h", 7, Scheme::Ws)),
            (":7", ("127.0.0.1", 7, Scheme::Ws)),
            ("http://h:7", ("h", 7, Scheme::Ws)),
            ("https://h:7", ("h", 7, Scheme::Wss)),
            (" tcp://h:7 ", ("h", 7, Scheme::Tcp)),
        ] {
            let t = parse(form).expect(form);
            assert_eq!((t.host.as_str(), t.port, t.scheme), want, "{form}");
        }
        for bad in ["", "h:notaport", "ws://h:0", "gopher://h:1", "::::"] {
            let e = match parse(bad) {
                Ok(t) => panic!("{bad} parsed: {t:?}"),
                Err(e) => e,
            };
            assert!(e.contains(URL_FORMS), "{bad}: {e}");
        }
    }
}
