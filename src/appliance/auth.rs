//! OAuth2 client credentials: one cached token per site, shared by every request.
//!
//! The appliance keeps at most 30 live tokens per API account and silently drops the
//! oldest when a 31st is made, so the cache never asks for more than one token at a time
//! (the async mutex is held while a token request is in flight) and renews only when the
//! token is about to expire or the appliance has refused it.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Renew this long before `expires_in` runs out (or a third of the lifetime if shorter).
const RENEW_MARGIN: Duration = Duration::from_secs(120);

/// A bearer token. `Debug` hides the value.
#[derive(Clone)]
pub(crate) struct Token {
    value: String,
    /// Counts tokens fetched by this cache, so a 401 renews only the token it was seen with.
    pub(crate) generation: u64,
    /// When to stop using it.
    renew_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"***")
            .field("generation", &self.generation)
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

impl Token {
    /// The header value.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

/// The token endpoint's JSON answer.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub(crate) access_token: String,
    pub(crate) token_type: String,
    pub(crate) expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Checks an answer and turns it into a token valid from `received`.
pub(crate) fn token_from_answer(
    answer: TokenAnswer,
    generation: u64,
    received: Instant,
) -> Result<Token, String> {
    if !answer.token_type.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "unsupported token type \"{}\" (expected Bearer)",
            answer.token_type
        ));
    }
    if answer.access_token.is_empty() {
        return Err("the answer holds an empty access_token".into());
    }
    // Without expires_in, assume the documented hour; never assume it when it is given.
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
    let margin = RENEW_MARGIN.min(lifetime / 3);
    Ok(Token {
        value: answer.access_token,
        generation,
        renew_at: received + lifetime - margin,
    })
}

/// The per-site cache.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    /// The current token and the number of tokens fetched so far. Held across the token
    /// request so that concurrent callers wait for one request instead of making their own.
    state: Mutex<(Option<Token>, u64)>,
}

impl TokenCache {
    /// A valid token: the cached one, or a new one from `fetch` when there is none, it is
    /// about to expire, or it is the token of generation `refused` (a 401 was seen with it).
    pub(crate) async fn get<F, Fut, E>(&self, refused: Option<u64>, fetch: F) -> Result<Token, E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<Token, E>>,
    {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.0
            && Instant::now() < token.renew_at
            && refused != Some(token.generation)
        {
            return Ok(token.clone());
        }
        let generation = state.1 + 1;
        let token = fetch(generation).await?;
        state.1 = generation;
        state.0 = Some(token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: &str, expires_in: Option<u64>) -> TokenAnswer {
        TokenAnswer {
            access_token: "t".into(),
            token_type: kind.into(),
            expires_in,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_type_is_compared_without_case_and_expiry_is_honoured() {
        let now = Instant::now();
        for kind in ["Bearer", "bearer", "BEARER"] {
            assert!(token_from_answer(answer(kind, Some(60)), 1, now).is_ok());
        }
        assert!(token_from_answer(answer("mac", Some(60)), 1, now).is_err());
        let t = token_from_answer(answer("bearer", Some(1799)), 1, now).unwrap();
        assert_eq!(t.renew_at - now, Duration::from_secs(1799 - 120));
        let t = token_from_answer(answer("bearer", Some(30)), 1, now).unwrap();
        assert_eq!(t.renew_at - now, Duration::from_secs(20));
        assert!(!format!("{t:?}").contains("\"t\""));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_renews_only_when_expired_or_refused() {
        let cache = TokenCache::default();
        let fetch = |g| async move {
            token_from_answer(answer("Bearer", Some(300)), g, Instant::now())
                .map_err(|e| e.to_string())
        };
        let a = cache.get(None, fetch).await.unwrap();
        let b = cache.get(None, fetch).await.unwrap();
        assert_eq!((a.generation, b.generation), (1, 1));
        let c = cache.get(Some(1), fetch).await.unwrap();
        assert_eq!(c.generation, 2);
        // A 401 seen with an older token does not renew the newer one again.
        let d = cache.get(Some(1), fetch).await.unwrap();
        assert_eq!(d.generation, 2);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(cache.get(None, fetch).await.unwrap().generation, 3);
    }
}
