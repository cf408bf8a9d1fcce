//! Just enough of the W3C WebDriver protocol to drive Debian's Chromium through ChromeDriver:
//! plain JSON over HTTP/1.1 on loopback, one request per connection.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// W3C's key for element references in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    child: Child,
    port: u16,
    session: String,
}

async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // Read the head, then exactly Content-Length bytes: ChromeDriver may keep the connection open.
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, mut payload) = loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&response[..at]).into_owned(), response[at + 4..].to_vec());
        }
    };
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse::<usize>()))
        .ok_or("no Content-Length")?
        .map_err(|e| e.to_string())?;
    while payload.len() < length {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    let payload = String::from_utf8_lossy(&payload).into_owned();
    let value: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    if head.starts_with("HTTP/1.1 2") {
        Ok(value["value"].clone())
    } else {
        Err(value["value"].to_string())
    }
}

impl Driver {
    /// Start ChromeDriver on a free port and a headless Chromium session with its own profile.
    pub async fn start(profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; make test installs it)");
        let mut ready = false;
        for _ in 0..100 {
            if http(port, "GET", "/status", None).await.is_ok_and(|v| v["ready"] == true) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start");
        // The flags keep Chromium from reaching for the network this machine does not have.
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,900", format!("--user-data-dir={}", profile.display())]
        }}}});
        let created = http(port, "POST", "/session", Some(&capabilities)).await.expect("browser session");
        let session = created["sessionId"].as_str().expect("session id").to_owned();
        Driver { child, port, session }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        http(self.port, method, &path, body.as_ref()).await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> String {
        let found = self.call("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/clear"), Some(json!({}))).await;
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/element/{element}/text"), None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Run `script` (a function body) in the page and return its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).expect("PNG in base64");
        std::fs::write(path, bytes).expect("screenshot written");
    }

    /// Wait until `script` returns true, up to ten seconds.
    pub async fn wait_for(&self, script: &str) {
        for _ in 0..100 {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for: {script}");
    }

    pub async fn quit(mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
