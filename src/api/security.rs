//! Who may use the server. Websocket upgrades must come from this server's own pages (another
//! site open in the same browser must not drive the model through the user's connection). With
//! an API key (`serve --api-key`), every page, API, stream and websocket needs either
//! `Authorization: Bearer <key>` or the session cookie a browser gets from `/login` — by the
//! one-time link printed at start-up, or by typing the key into the login form.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    Form,
};
use serde::Deserialize;

use crate::{error::AppError, state::AppState};

const COOKIE: &str = "quantlab_session";
/// How long the link printed at start-up may be used (once).
const LOGIN_LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long a browser session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions kept at once; the oldest goes first beyond it.
const MAX_SESSIONS: usize = 1000;

pub struct Sessions {
    key: Option<String>,
    /// The one-time login token and when it was made; `None` once used.
    login_token: Mutex<Option<(String, Instant)>>,
    active: Mutex<HashMap<String, Instant>>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

impl Sessions {
    pub fn new(key: Option<String>) -> Self {
        let login_token = key.as_ref().map(|_| (random_token(), Instant::now()));
        Self {
            key,
            login_token: Mutex::new(login_token),
            active: Mutex::new(HashMap::new()),
        }
    }

    pub fn required(&self) -> bool {
        self.key.is_some()
    }

    /// The one-time link that logs a browser in, for the start-up log.
    pub fn login_link(&self, addr: &std::net::SocketAddr) -> Option<String> {
        let token = self.login_token.lock().ok()?.as_ref()?.0.clone();
        Some(format!("http://{addr}/login?token={token}"))
    }

    fn open_session(&self) -> String {
        let token = random_token();
        if let Ok(mut active) = self.active.lock() {
            active.retain(|_, since| since.elapsed() < SESSION_LIFETIME);
            if active.len() >= MAX_SESSIONS {
                if let Some(oldest) = active
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
                {
                    active.remove(&oldest);
                }
            }
            active.insert(token.clone(), Instant::now());
        }
        token
    }

    /// A session for the holder of the one-time token, which is then spent.
    fn redeem(&self, token: &str) -> Option<String> {
        let mut slot = self.login_token.lock().ok()?;
        let valid = slot.as_ref().is_some_and(|(expected, made)| {
            made.elapsed() < LOGIN_LINK_LIFETIME
                && same_secret(token.as_bytes(), expected.as_bytes())
        });
        if !valid {
            return None;
        }
        *slot = None;
        drop(slot);
        Some(self.open_session())
    }

    fn key_matches(&self, given: &str) -> bool {
        self.key
            .as_deref()
            .is_some_and(|key| same_secret(given.as_bytes(), key.as_bytes()))
    }

    fn session_valid(&self, token: &str) -> bool {
        self.active.lock().is_ok_and(|active| {
            active.iter().any(|(t, since)| {
                since.elapsed() < SESSION_LIFETIME && same_secret(t.as_bytes(), token.as_bytes())
            })
        })
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if self.key.is_none() {
            return Ok(());
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(key) = bearer {
            return if self.key_matches(key.trim()) {
                Ok(())
            } else {
                Err("the API key is not valid for this server")
            };
        }
        if cookie(headers, COOKIE).is_some_and(|token| self.session_valid(token)) {
            return Ok(());
        }
        Err("this server needs an API key: send `Authorization: Bearer <key>`, or log in at /login")
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Paths anyone may reach: health checks, the login page and the files pages load.
fn public(path: &str) -> bool {
    path == "/health" || path == "/login" || path == "/favicon.svg" || path.starts_with("/pkg/")
}

/// With an API key, everything but [`public`] paths needs the key or a session. A browser
/// asking for a page is sent to the login form instead of getting JSON.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let sessions = &state.app.sessions;
    if !sessions.required() || public(request.uri().path()) {
        return next.run(request).await;
    }
    match sessions.authorized(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            let wants_page = request.method() == axum::http::Method::GET
                && request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/html"));
            if wants_page {
                Redirect::to("/login").into_response()
            } else {
                AppError::Unauthorized(why.into()).into_response()
            }
        }
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

fn logged_in(session: String) -> Response {
    let cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{m}</p>"))
        .unwrap_or_default();
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Quantlab: log in</title><style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         input,button{{font:inherit;padding:.5rem}}input{{width:100%;box-sizing:border-box;margin:.5rem 0}}.error{{color:#b00020}}</style></head>\
         <body><h1>Quantlab</h1><p>This server needs its API key. Open the link it printed at start-up, or enter the key.</p>{message}\
         <form method=\"post\" action=\"/login\"><label>API key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" data-testid=\"login-key\" required></label>\
         <button type=\"submit\" data-testid=\"login-submit\">Log in</button></form></body></html>"
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

/// `GET /login`: redeems the one-time link, or shows the form.
pub async fn login_get(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    let sessions = &state.app.sessions;
    if !sessions.required() {
        return Redirect::to("/").into_response();
    }
    match query.token {
        None => login_page(StatusCode::OK, None),
        Some(token) => match sessions.redeem(&token) {
            Some(session) => logged_in(session),
            None => login_page(
                StatusCode::UNAUTHORIZED,
                Some("That login link was used already or has expired (links work once, for 15 minutes). Enter the key instead."),
            ),
        },
    }
}

/// `POST /login` with the key from the form.
pub async fn login_post(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let sessions = &state.app.sessions;
    if !sessions.required() {
        return Redirect::to("/").into_response();
    }
    if sessions.key_matches(form.key.trim()) {
        logged_in(sessions.open_session())
    } else {
        login_page(
            StatusCode::UNAUTHORIZED,
            Some("That key is not this server's API key."),
        )
    }
}

pub async fn refuse_foreign_websockets(request: Request, next: Next) -> Response {
    if is_websocket_upgrade(request.headers()) && !same_origin(request.headers()) {
        return AppError::Forbidden(
            "websocket connections are only accepted from this server's own pages".into(),
        )
        .into_response();
    }
    next.run(request).await
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Browsers always send `Origin` on websocket requests; non-browser clients may omit it, and
/// they are not the threat this guards against.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.eq_ignore_ascii_case(host)
}

/// Compares without stopping at the first difference, so timing does not leak the key.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_servers_own_origin_passes() {
        assert!(same_origin(&headers(
            Some("http://127.0.0.1:3000"),
            "127.0.0.1:3000"
        )));
        assert!(same_origin(&headers(None, "127.0.0.1:3000")));
        assert!(!same_origin(&headers(
            Some("http://evil.example"),
            "127.0.0.1:3000"
        )));
        assert!(!same_origin(&headers(
            Some("http://127.0.0.1:3000.evil.example"),
            "127.0.0.1:3000"
        )));
        assert!(!same_origin(&headers(Some("null"), "127.0.0.1:3000")));
    }

    #[test]
    fn the_login_link_works_once_and_sessions_authorize() {
        let sessions = Sessions::new(Some("k3y".into()));
        let link = sessions
            .login_link(&"127.0.0.1:1".parse().unwrap())
            .unwrap();
        let token = link.split("token=").nth(1).unwrap().to_string();
        assert!(sessions.redeem("wrong").is_none());
        let session = sessions.redeem(&token).expect("first use");
        assert!(sessions.redeem(&token).is_none(), "spent");
        let mut h = HeaderMap::new();
        assert!(sessions.authorized(&h).is_err());
        h.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={session}").parse().unwrap(),
        );
        assert!(sessions.authorized(&h).is_ok());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer k3y".parse().unwrap());
        assert!(sessions.authorized(&h).is_ok());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(sessions.authorized(&h).is_err());
        assert!(Sessions::new(None).authorized(&HeaderMap::new()).is_ok());
    }
}
