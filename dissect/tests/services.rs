//! The remote model services against a small scripted HTTP server (std::net only): request
//! bodies, retries, timeouts, the response cache, bounded concurrency and image decoding.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dissect::concepts::{
    CaptionInput, Captioner, ChatMessage, ChatModel, ChatRequest, ConceptImageSource, ProviderError, Role,
};
use dissect::services::{
    ApiKey, Automatic1111Config, Automatic1111Images, OpenAiCaptioner, OpenAiCaptionerConfig, OpenAiChat,
    OpenAiChatConfig, OpenAiImages, OpenAiImagesConfig, ResponseCache,
};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The fake server

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply { status, headers: vec![], body: body.to_string().into_bytes(), delay: Duration::ZERO }
    }
    fn text(status: u16, body: &str) -> Self {
        Reply { status, headers: vec![], body: body.as_bytes().to_vec(), delay: Duration::ZERO }
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Box<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

struct State {
    handler: Handler,
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

/// Answers every request with `handler(request, index)`, one thread per connection, and
/// `Connection: close`. Counts requests in flight (parsed, not yet answered).
struct FakeServer {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeServer {
    fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeServer { addr, state }
    }

    /// An OpenAI-style API root on this server.
    fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn root(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let Some(request) = read_request(&stream) else { return };
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(request.clone());
        requests.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = (state.handler)(&request, index);
    std::thread::sleep(reply.delay);
    // Leave the count before answering: the client may send its next request as soon as it has
    // this answer, and that must not be counted together with this one.
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    head.push_str("Content-Type: application/json\r\nConnection: close\r\n");
    head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

fn read_request(stream: &TcpStream) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded { method, path, headers, body })
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn chat_answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }],
    })
}

fn chat_config(server: &FakeServer) -> OpenAiChatConfig {
    OpenAiChatConfig {
        base_url: server.base(),
        model: "test-llm".into(),
        api_key: Some(ApiKey::new("sk-test")),
        timeout_secs: 5.0,
        max_concurrency: 2,
        retries: 2,
        backoff_ms: 10,
        max_retry_wait_secs: 10.0,
        ..OpenAiChatConfig::default()
    }
}

fn request(seed: u64) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You summarize image descriptions."),
            ChatMessage::user("a red tractor; a red dress"),
        ],
        temperature: 0.3,
        max_tokens: 20,
        seed,
    }
}

fn png_base64(image: &RgbImage) -> String {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

fn solid(w: u32, h: u32, value: u8) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([value, 255 - value, 7]))
}

// ---------------------------------------------------------------------------------------------
// Chat

#[test]
fn chat_sends_the_request_and_trims_the_answer() {
    let server = FakeServer::start(|_, _| Reply::json(200, chat_answer("  red-themed scenes \n")));
    let chat = OpenAiChat::new(chat_config(&server)).unwrap();
    let answer = chat.complete(&request(7)).unwrap();
    assert_eq!(answer, "red-themed scenes");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let body = r.json();
    assert_eq!(body["model"], "test-llm");
    assert_eq!(body["temperature"], json!(0.3));
    assert_eq!(body["seed"], 7);
    assert_eq!(body["max_tokens"], 20);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You summarize image descriptions."},
            {"role": "user", "content": "a red tractor; a red dress"},
        ])
    );

    let info = chat.info();
    assert_eq!(info.role, Role::Llm);
    assert!(info.paper_equivalent);
    assert_eq!(info.name, format!("test-llm via {}", server.base()));
}

#[test]
fn chat_without_key_sends_no_authorization() {
    let server = FakeServer::start(|_, _| Reply::json(200, chat_answer("ok")));
    let chat = OpenAiChat::new(OpenAiChatConfig { api_key: None, ..chat_config(&server) }).unwrap();
    chat.complete(&request(0)).unwrap();
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[test]
fn retry_after_429_is_honoured_then_succeeds() {
    let server = FakeServer::start(|_, i| {
        if i == 0 {
            Reply::json(429, json!({"error": {"message": "rate limited"}})).header("Retry-After", "1")
        } else {
            Reply::json(200, chat_answer("fine"))
        }
    });
    // A long exponential backoff: only the server's Retry-After can make this quick.
    let chat = OpenAiChat::new(OpenAiChatConfig { backoff_ms: 20_000, ..chat_config(&server) }).unwrap();
    let start = Instant::now();
    assert_eq!(chat.complete(&request(1)).unwrap(), "fine");
    let elapsed = start.elapsed();
    assert_eq!(server.count(), 2);
    assert!(elapsed >= Duration::from_millis(900), "waited only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "waited {elapsed:?}");
}

#[test]
fn server_errors_are_retried_then_reported_with_the_endpoint() {
    let server = FakeServer::start(|_, _| Reply::text(500, "internal trouble"));
    let chat = OpenAiChat::new(chat_config(&server)).unwrap();
    let err = chat.complete(&request(1)).unwrap_err();
    assert_eq!(server.count(), 3, "1 attempt + 2 retries");
    let endpoint_url = format!("{}/chat/completions", server.base());
    match &err {
        ProviderError::Http { endpoint, status, body } => {
            assert_eq!(endpoint, &endpoint_url);
            assert_eq!(*status, 500);
            assert_eq!(body, "internal trouble");
        }
        other => panic!("expected Http error, got {other:?}"),
    }
    assert!(err.to_string().contains(&endpoint_url));
}

#[test]
fn retry_wait_cap_stops_retries_early() {
    let server = FakeServer::start(|_, _| Reply::text(503, "busy").header("Retry-After", "30"));
    let chat =
        OpenAiChat::new(OpenAiChatConfig { retries: 5, max_retry_wait_secs: 2.0, ..chat_config(&server) }).unwrap();
    let start = Instant::now();
    let err = chat.complete(&request(1)).unwrap_err();
    assert!(matches!(err, ProviderError::Http { status: 503, .. }), "{err:?}");
    assert_eq!(server.count(), 1);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn client_errors_fail_at_once_with_a_truncated_body() {
    let long = "x".repeat(2000);
    let server = FakeServer::start(move |_, _| Reply::text(400, &long));
    let chat = OpenAiChat::new(chat_config(&server)).unwrap();
    let err = chat.complete(&request(1)).unwrap_err();
    assert_eq!(server.count(), 1, "a 400 is not retried");
    match err {
        ProviderError::Http { status: 400, body, endpoint } => {
            assert!(endpoint.ends_with("/v1/chat/completions"));
            let chars = body.chars().count();
            assert!((250..=310).contains(&chars), "body kept {chars} chars");
        }
        other => panic!("expected Http 400, got {other:?}"),
    }
}

#[test]
fn a_slow_answer_times_out_as_a_request_error() {
    let server = FakeServer::start(|_, _| Reply::json(200, chat_answer("late")).after(Duration::from_secs(3)));
    let chat = OpenAiChat::new(OpenAiChatConfig { timeout_secs: 0.3, ..chat_config(&server) }).unwrap();
    let start = Instant::now();
    let err = chat.complete(&request(1)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    match &err {
        ProviderError::Request { endpoint, reason } => {
            assert!(endpoint.ends_with("/v1/chat/completions"));
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("expected Request error, got {other:?}"),
    }
    assert_eq!(server.count(), 1, "timeouts are not retried");
}

#[test]
fn connection_failures_are_retried_then_reported() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let chat = OpenAiChat::new(OpenAiChatConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        retries: 2,
        backoff_ms: 10,
        ..OpenAiChatConfig::default()
    })
    .unwrap();
    match chat.complete(&request(1)).unwrap_err() {
        ProviderError::Request { endpoint, reason } => {
            assert_eq!(endpoint, format!("http://127.0.0.1:{port}/v1/chat/completions"));
            assert!(reason.contains("after 3 attempts"), "{reason}");
        }
        other => panic!("expected Request error, got {other:?}"),
    }
}

#[test]
fn malformed_answers_are_request_errors() {
    let server = FakeServer::start(|_, i| match i {
        0 => Reply::text(200, "not json"),
        1 => Reply::json(200, json!({"choices": []})),
        _ => Reply::json(200, json!({"error": {"message": "model overloaded"}})),
    });
    let chat = OpenAiChat::new(chat_config(&server)).unwrap();
    for expected in ["not JSON", "choices[0]", "model overloaded"] {
        match chat.complete(&request(1)).unwrap_err() {
            ProviderError::Request { reason, .. } => assert!(reason.contains(expected), "{reason}"),
            other => panic!("expected Request error, got {other:?}"),
        }
    }
}

#[test]
fn invalid_configs_are_refused() {
    let bad_url = OpenAiChat::new(OpenAiChatConfig { base_url: "nowhere".into(), ..Default::default() });
    assert!(matches!(bad_url, Err(ProviderError::Request { .. })));
    let no_slots = OpenAiChat::new(OpenAiChatConfig { max_concurrency: 0, ..Default::default() });
    assert!(matches!(no_slots, Err(ProviderError::Local { .. })));
    let no_time = OpenAiChat::new(OpenAiChatConfig { timeout_secs: 0.0, ..Default::default() });
    assert!(matches!(no_time, Err(ProviderError::Local { .. })));
    let toml_like: OpenAiChatConfig =
        serde_json::from_value(json!({"base_url": "http://h/v1", "model": "m", "api_key": "k"})).unwrap();
    assert_eq!(toml_like.retries, OpenAiChatConfig::default().retries);
    assert!(!format!("{toml_like:?}").contains("\"k\""), "api keys are redacted in Debug");
    assert!(serde_json::from_value::<OpenAiChatConfig>(json!({"modle": "typo"})).is_err());
}

// ---------------------------------------------------------------------------------------------
// Cache

#[test]
fn cached_answers_make_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(|r, _| {
        let seed = r.json()["seed"].as_u64().unwrap();
        Reply::json(200, chat_answer(&format!("answer {seed}")))
    });
    let cache = ResponseCache::at(dir.path());
    let chat = OpenAiChat::new(chat_config(&server)).unwrap().with_cache(cache.clone());
    assert_eq!(chat.complete(&request(1)).unwrap(), "answer 1");
    assert_eq!(chat.complete(&request(1)).unwrap(), "answer 1");
    assert_eq!(server.count(), 1, "second identical call comes from the cache");
    assert_eq!(chat.complete(&request(2)).unwrap(), "answer 2");
    assert_eq!(server.count(), 2, "a different seed is a different request");
    let mut hotter = request(1);
    hotter.temperature = 0.7;
    chat.complete(&hotter).unwrap();
    assert_eq!(server.count(), 3, "a different temperature is a different request");

    // A new provider on the same directory (a re-run) still makes no request.
    let again = OpenAiChat::new(chat_config(&server)).unwrap().with_cache(cache);
    assert_eq!(again.complete(&request(2)).unwrap(), "answer 2");
    assert_eq!(server.count(), 3);

    // Without a cache, every call goes out.
    let uncached = OpenAiChat::new(chat_config(&server)).unwrap();
    uncached.complete(&request(2)).unwrap();
    assert_eq!(server.count(), 4);
}

#[test]
fn error_answers_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        FakeServer::start(|_, i| if i == 0 { Reply::text(400, "bad") } else { Reply::json(200, chat_answer("good")) });
    let chat = OpenAiChat::new(chat_config(&server)).unwrap().with_cache(ResponseCache::at(dir.path()));
    assert!(chat.complete(&request(1)).is_err());
    assert_eq!(chat.complete(&request(1)).unwrap(), "good");
    assert_eq!(chat.complete(&request(1)).unwrap(), "good");
    assert_eq!(server.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Bounded concurrency

#[test]
fn concurrency_bound_is_never_exceeded() {
    let server = FakeServer::start(|_, _| Reply::json(200, chat_answer("ok")).after(Duration::from_millis(120)));
    let chat = OpenAiChat::new(OpenAiChatConfig { max_concurrency: 2, ..chat_config(&server) }).unwrap();
    std::thread::scope(|s| {
        for seed in 0..8 {
            let chat = &chat;
            s.spawn(move || chat.complete(&request(seed)).unwrap());
        }
    });
    assert_eq!(server.count(), 8);
    assert_eq!(server.max_in_flight(), 2, "two in flight at most, and the bound was used");
}

// ---------------------------------------------------------------------------------------------
// Captioner

/// Answers with the size of the image in the request's data URL; later images answer sooner,
/// so completion order differs from input order.
fn caption_server() -> FakeServer {
    FakeServer::start(|r, _| {
        let body = r.json();
        let content = &body["messages"][0]["content"];
        assert_eq!(content[0]["type"], "text");
        let url = content[1]["image_url"]["url"].as_str().expect("image_url part").to_string();
        let b64 = url.strip_prefix("data:image/jpeg;base64,").expect("a JPEG data URL");
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("valid base64");
        let image = image::load_from_memory(&bytes).expect("a decodable image");
        let delay = Duration::from_millis(10 * 50u64.saturating_sub(image.width() as u64).min(30));
        Reply::json(200, chat_answer(&format!("\"a {}x{} picture\"\n", image.width(), image.height()))).after(delay)
    })
}

#[test]
fn captioner_sends_data_urls_and_keeps_input_order() {
    let server = caption_server();
    let captioner = OpenAiCaptioner::new(OpenAiCaptionerConfig {
        base_url: server.base(),
        model: "vision-test".into(),
        max_concurrency: 3,
        backoff_ms: 10,
        ..OpenAiCaptionerConfig::default()
    })
    .unwrap();
    let images: Vec<RgbImage> = (0..6).map(|i| solid(40 + i, 30 + i, 30 * i as u8)).collect();
    let keys: Vec<String> = (0..6).map(|i| format!("{:064x}", i + 1)).collect();
    let inputs: Vec<CaptionInput<'_>> = images
        .iter()
        .zip(&keys)
        .map(|(image, key)| CaptionInput { key, image, description: None, withheld_classes: &[] })
        .collect();
    let captions = captioner.caption(&inputs).unwrap();
    let expected: Vec<String> = (0..6).map(|i| format!("a {}x{} picture", 40 + i, 30 + i)).collect();
    assert_eq!(captions, expected);
    assert_eq!(server.count(), 6);
    assert!(server.max_in_flight() <= 3);
    assert!(server.max_in_flight() >= 2, "requests ran concurrently");

    let body = server.requests()[0].json();
    assert_eq!(body["model"], "vision-test");
    assert_eq!(body["messages"][0]["content"][0]["text"], OpenAiCaptionerConfig::default().prompt);
    assert_eq!(body["max_tokens"], 40);

    let info = captioner.info();
    assert_eq!(info.role, Role::Captioner);
    assert!(info.paper_equivalent);
    assert!(info.name.contains(&server.base()));
}

#[test]
fn captions_are_cached_by_image_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = caption_server();
    let captioner = OpenAiCaptioner::new(OpenAiCaptionerConfig {
        base_url: server.base(),
        max_concurrency: 2,
        ..OpenAiCaptionerConfig::default()
    })
    .unwrap()
    .with_cache(ResponseCache::at(dir.path()));
    let a = solid(20, 10, 1);
    let b = solid(22, 12, 2);
    let inputs = [
        CaptionInput { key: "aa11", image: &a, description: None, withheld_classes: &[] },
        CaptionInput { key: "bb22", image: &b, description: None, withheld_classes: &[] },
    ];
    let first = captioner.caption(&inputs).unwrap();
    assert_eq!(server.count(), 2);
    let second = captioner.caption(&inputs[..1]).unwrap();
    assert_eq!(second, first[..1]);
    assert_eq!(server.count(), 2, "cached caption");
    // Images without a key are identified by their pixels.
    let unkeyed = [CaptionInput { key: "", image: &a, description: None, withheld_classes: &[] }];
    captioner.caption(&unkeyed).unwrap();
    captioner.caption(&unkeyed).unwrap();
    assert_eq!(server.count(), 3);
}

#[test]
fn large_images_are_downscaled_before_upload() {
    let server = caption_server();
    let captioner = OpenAiCaptioner::new(OpenAiCaptionerConfig {
        base_url: server.base(),
        max_side: 64,
        ..OpenAiCaptionerConfig::default()
    })
    .unwrap();
    let big = solid(200, 100, 9);
    let caption =
        captioner.caption(&[CaptionInput { key: "cc33", image: &big, description: None, withheld_classes: &[] }]);
    assert_eq!(caption.unwrap(), vec!["a 64x32 picture".to_string()]);
}

#[test]
fn a_failed_caption_fails_the_batch() {
    let server = FakeServer::start(|_, i| {
        if i == 1 {
            Reply::text(422, "unsupported image")
        } else {
            Reply::json(200, chat_answer("fine"))
        }
    });
    let captioner = OpenAiCaptioner::new(OpenAiCaptionerConfig {
        base_url: server.base(),
        max_concurrency: 1,
        ..OpenAiCaptionerConfig::default()
    })
    .unwrap();
    let img = solid(8, 8, 3);
    let inputs: Vec<_> = ["a1", "a2", "a3"]
        .iter()
        .map(|k| CaptionInput { key: k, image: &img, description: None, withheld_classes: &[] })
        .collect();
    let err = captioner.caption(&inputs).unwrap_err();
    assert!(matches!(err, ProviderError::Http { status: 422, .. }), "{err:?}");
    assert_eq!(server.count(), 2, "no new request after the failure");
}

// ---------------------------------------------------------------------------------------------
// Image generators

#[test]
fn openai_images_decode_base64_and_send_seeds() {
    let server = FakeServer::start(|r, _| {
        let seed = r.json()["seed"].as_u64().unwrap();
        let image = solid(8, 6, 10 * seed as u8);
        Reply::json(200, json!({"created": 1, "data": [{"b64_json": png_base64(&image)}]}))
    });
    let dir = tempfile::tempdir().unwrap();
    let source = OpenAiImages::new(OpenAiImagesConfig {
        base_url: server.base(),
        model: "sd-test".into(),
        max_concurrency: 2,
        ..OpenAiImagesConfig::default()
    })
    .unwrap()
    .with_cache(ResponseCache::at(dir.path()));
    let images = source.images("red tractor", 3).unwrap();
    assert_eq!(images.len(), 3);
    for (seed, img) in images.iter().enumerate() {
        assert_eq!(img.origin, format!("seed {seed}"));
        assert_eq!(img.image.dimensions(), (8, 6));
        assert_eq!(img.image.get_pixel(3, 3), &Rgb([10 * seed as u8, 255 - 10 * seed as u8, 7]));
    }
    assert!(images[0].key != images[1].key && images[1].key != images[2].key);

    let mut requests = server.requests();
    assert_eq!(requests.len(), 3);
    requests.sort_by_key(|r| r.json()["seed"].as_u64());
    for (seed, r) in requests.iter().enumerate() {
        assert_eq!(r.path, "/v1/images/generations");
        let body = r.json();
        assert_eq!(body["prompt"], "One realistic image of red tractor");
        assert_eq!(body["model"], "sd-test");
        assert_eq!(body["n"], 1);
        assert_eq!(body["size"], "512x512");
        assert_eq!(body["response_format"], "b64_json");
        assert_eq!(body["seed"], seed as u64);
    }

    // Cached per concept + seed: asking for one more image sends one request.
    let more = source.images("red tractor", 4).unwrap();
    assert_eq!(server.count(), 4);
    assert_eq!(more[0].key, images[0].key);
    source.images("blue sky", 1).unwrap();
    assert_eq!(server.count(), 5);

    let info = source.info();
    assert_eq!(info.role, Role::ConceptImages);
    assert!(info.paper_equivalent && info.name.contains(&server.base()));
}

#[test]
fn openai_images_without_b64_are_explained() {
    let server = FakeServer::start(|_, _| Reply::json(200, json!({"data": [{"url": "https://x/y.png"}]})));
    let source = OpenAiImages::new(OpenAiImagesConfig {
        base_url: server.base(),
        response_format: None,
        send_seed: false,
        ..OpenAiImagesConfig::default()
    })
    .unwrap();
    match source.images("cat", 1).unwrap_err() {
        ProviderError::Request { reason, .. } => assert!(reason.contains("b64_json"), "{reason}"),
        other => panic!("expected Request error, got {other:?}"),
    }
    let body = server.requests()[0].json();
    assert!(body.get("seed").is_none() && body.get("response_format").is_none());
}

#[test]
fn automatic1111_sends_seed_and_steps_and_decodes_images() {
    let server = FakeServer::start(|r, _| {
        let seed = r.json()["seed"].as_u64().unwrap();
        let image = solid(16, 12, 50 + seed as u8);
        Reply::json(200, json!({"images": [png_base64(&image)], "parameters": {}, "info": "{}"}))
    });
    let source = Automatic1111Images::new(Automatic1111Config {
        base_url: server.root(),
        model: "v1-4-pruned-emaonly".into(),
        ..Automatic1111Config::default()
    })
    .unwrap();
    let images = source.images("striped fabric", 2).unwrap();
    assert_eq!(images.len(), 2);
    for (seed, img) in images.iter().enumerate() {
        assert_eq!(img.origin, format!("seed {seed}"));
        assert_eq!(img.image.dimensions(), (16, 12));
        assert_eq!(img.image.get_pixel(0, 0)[0], 50 + seed as u8);
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(server.max_in_flight(), 1, "A1111 defaults to one request at a time");
    for (seed, r) in requests.iter().enumerate() {
        assert_eq!(r.path, "/sdapi/v1/txt2img");
        let body = r.json();
        assert_eq!(body["prompt"], "One realistic image of striped fabric");
        assert_eq!(body["seed"], seed as u64);
        assert_eq!(body["steps"], 50);
        assert_eq!(body["sampler_name"], "DPM++ 2M");
        assert_eq!(body["width"], 512);
        assert_eq!(body["height"], 512);
        assert_eq!(body["batch_size"], 1);
        assert_eq!(body["cfg_scale"], json!(7.5));
        assert_eq!(body["override_settings"]["sd_model_checkpoint"], "v1-4-pruned-emaonly");
    }
    let info = source.info();
    assert_eq!(info.role, Role::ConceptImages);
    assert!(info.paper_equivalent);
    assert!(info.name.contains("50 steps") && info.name.contains(&server.root()));
}

#[test]
fn automatic1111_reports_missing_images() {
    let server = FakeServer::start(|_, _| Reply::json(200, json!({"images": []})));
    let source =
        Automatic1111Images::new(Automatic1111Config { base_url: server.root(), ..Default::default() }).unwrap();
    match source.images("cat", 1).unwrap_err() {
        ProviderError::Request { endpoint, reason } => {
            assert_eq!(endpoint, format!("{}/sdapi/v1/txt2img", server.root()));
            assert!(reason.contains("images[0]"), "{reason}");
        }
        other => panic!("expected Request error, got {other:?}"),
    }
    // A1111 may be left without a model override.
    assert!(server.requests()[0].json().get("override_settings").is_none());
}
