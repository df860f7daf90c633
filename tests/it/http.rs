//! Health, readiness, metrics and the admin API.

use crate::both_stores;
use crate::support::app::{new_contact, Options, TestApp};

both_stores!(health_and_readiness, |db| async move {
    let app = TestApp::spawn(&db).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
});

both_stores!(metrics_count_webhooks_and_sends, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.settled(&contact).await;
    let text = app.get_text("/metrics").await;
    assert!(
        text.contains("switchboard_webhooks_total{bot=\"shop\",outcome=\"processed\"}"),
        "{text}"
    );
    assert!(text.contains("switchboard_send_attempts_total"), "{text}");
    assert!(
        text.contains("switchboard_outbox_rows{status=\"sent\"}"),
        "{text}"
    );
});

both_stores!(admin_api_needs_the_bearer_token, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = format!("{}/api/bots", app.base);
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(&url)
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bots: serde_json::Value = response.json().await.unwrap();
    assert_eq!(bots[0]["id"], "shop");
    assert_eq!(bots[0]["name"], "Test Shop");
    assert_eq!(bots[0]["nodes"], 4);
    assert_eq!(bots[0]["errors"], serde_json::json!([]));
    assert!(bots[0]["loaded_at"].is_string());
});

both_stores!(
    admin_api_without_a_token_configured_is_403,
    |db| async move {
        let app = TestApp::spawn_with(
            &db,
            Options {
                admin_token: None,
                ..Options::default()
            },
        )
        .await;
        let response = app
            .http
            .get(format!("{}/api/bots", app.base))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert!(response.text().await.unwrap().contains("--admin-token"));
    }
);
