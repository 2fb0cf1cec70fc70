//! Voice over the providers' webhooks, end to end through the real router: recorded prompts
//! served from the audio folder, and whole flows driven by simulated provider callbacks.

mod common;

use axum::http::StatusCode;
use common::Stores;

#[tokio::test]
async fn audio_files_are_served_with_type_and_caching_and_never_outside_the_folder() {
    let audio = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(audio.path().join("sw")).expect("mkdir");
    std::fs::write(audio.path().join("sw/karibu.mp3"), b"ID3fake-mp3").expect("write");
    std::fs::write(audio.path().join("welcome.wav"), b"RIFFfake-wav").expect("write");
    let outside = audio.path().parent().expect("parent").join("secret.txt");
    std::fs::write(&outside, b"not for callers").expect("write");
    let folder = audio.path().to_path_buf();
    let gw = common::start_with(Stores::MemorySqlite, move |c| c.voice.audio_dir = folder).await;

    let request = |path: &str| {
        axum::http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    use tower::ServiceExt;
    let response = gw.app.clone().oneshot(request("/audio/sw/karibu.mp3")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    assert_eq!(response.headers()["cache-control"], "public, max-age=86400");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    assert_eq!(&body[..], b"ID3fake-mp3");

    let response = gw.app.clone().oneshot(request("/audio/welcome.wav")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap_or("").contains("wav"));

    for escape in [
        "/audio/../secret.txt",
        "/audio/%2e%2e/secret.txt",
        "/audio/sw/../../secret.txt",
        "/audio/..%2fsecret.txt",
        "/audio/missing.mp3",
        "/audio/",
    ] {
        let response = gw.app.clone().oneshot(request(escape)).await.expect("answer");
        assert!(
            response.status().is_client_error(),
            "{escape} must be refused, got {}",
            response.status()
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        assert!(!body.windows(15).any(|w| w == b"not for callers"), "{escape} leaked a file");
    }
    let _ = std::fs::remove_file(outside);
    gw.cleanup().await;
}
