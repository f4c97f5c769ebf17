//! The price of one served request, in exact integers (DESIGN §6).
//!
//! ```text
//! base = (prompt − cached) × input + cached × cache_read      (cached part: when both known)
//!      + (completion − reasoning) × output + reasoning × reasoning_price   (idem; not for
//!                                                                           embeddings)
//! cost = base × multiplier / 10^9, truncated toward zero
//! ```
//!
//! Prices are nano-USD per token (`u64`), multipliers the WIT `decimal` (value × 10^9, `u64`).
//! Everything is computed in `u128` with checked operations, and the cost must fit a nano-USD
//! amount (`i64`): anything larger is an [`CostError::Overflow`], never a wrapped number.

/// 10^9: a multiplier of 1.
pub const MULTIPLIER_ONE: u64 = 1_000_000_000;

/// A model's prices in nano-USD per token; `None` where unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    /// Per input token.
    pub input: Option<u64>,
    /// Per output token.
    pub output: Option<u64>,
    /// Per input token read from the prompt cache.
    pub cache_read_input: Option<u64>,
    /// Per reasoning output token.
    pub reasoning_output: Option<u64>,
}

/// The token counts to bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Output tokens, reasoning ones included.
    pub completion: u64,
    /// Of `prompt`, those read from the prompt cache, when reported.
    pub cached_prompt: Option<u64>,
    /// Of `completion`, those spent on reasoning, when reported.
    pub reasoning: Option<u64>,
}

/// Which tokens an endpoint bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billed {
    /// Prompt and completion tokens (chat completions, responses, messages).
    PromptAndCompletion,
    /// Prompt tokens only (embeddings).
    PromptOnly,
}

/// Why no cost could be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostError {
    /// A price the request needs is unknown (`"input"` or `"output"`).
    MissingPrice(&'static str),
    /// The cost does not fit a nano-USD amount.
    Overflow(String),
}

impl std::fmt::Display for CostError {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CostError::MissingPrice(which) => write!(out, "the {which} price is unknown"),
            CostError::Overflow(message) => out.write_str(message),
        }
    }
}

impl Prices {
    /// Whether these prices can price a request that bills `billed`: the input price is
    /// known, and the output price too unless only prompt tokens are billed. (The cache and
    /// reasoning prices are optional: without them those tokens cost the normal price.)
    pub fn can_price(&self, billed: Billed) -> bool {
        self.input.is_some() && (billed == Billed::PromptOnly || self.output.is_some())
    }
}

/// The models whose prices to try, in order: the upstream model that served the request, then
/// the logical model the client asked for (when it differs).
pub fn lookup_order<'a>(upstream_model: &'a str, logical_model: &'a str) -> Vec<&'a str> {
    if upstream_model == logical_model {
        vec![upstream_model]
    } else {
        vec![upstream_model, logical_model]
    }
}

/// The cost of `tokens` at `prices` × `multiplier` (a WIT `decimal`), in nano-USD, truncated
/// toward zero.
pub fn cost(
    tokens: &Tokens,
    prices: &Prices,
    billed: Billed,
    multiplier: u64,
) -> Result<i64, CostError> {
    let base = base_cost(tokens, prices, billed)?;
    apply_multiplier(base, multiplier)
}

/// The cost of `tokens` at `prices` before the multiplier, in nano-USD.
pub fn base_cost(tokens: &Tokens, prices: &Prices, billed: Billed) -> Result<u128, CostError> {
    let input = prices.input.ok_or(CostError::MissingPrice("input"))?;
    let prompt = split_cost(
        "prompt",
        tokens.prompt,
        input,
        tokens.cached_prompt,
        prices.cache_read_input,
    )?;
    if billed == Billed::PromptOnly {
        return Ok(prompt);
    }
    let output = prices.output.ok_or(CostError::MissingPrice("output"))?;
    let completion = split_cost(
        "completion",
        tokens.completion,
        output,
        tokens.reasoning,
        prices.reasoning_output,
    )?;
    prompt
        .checked_add(completion)
        .ok_or_else(|| overflow(format!("{prompt} + {completion} nano-USD")))
}

/// `total` tokens at `price`, of which `special` (when reported and priced) at
/// `special_price`. A `special` count above `total` is taken as `total`: an upstream that
/// reports more cached (or reasoning) tokens than tokens is never billed for tokens it did not
/// serve.
fn split_cost(
    what: &str,
    total: u64,
    price: u64,
    special: Option<u64>,
    special_price: Option<u64>,
) -> Result<u128, CostError> {
    let (normal, special_cost) = match (special, special_price) {
        (Some(special), Some(special_price)) => {
            let special = special.min(total);
            (
                total - special,
                u128::from(special) * u128::from(special_price),
            )
        }
        _ => (total, 0),
    };
    (u128::from(normal) * u128::from(price))
        .checked_add(special_cost)
        .ok_or_else(|| overflow(format!("the cost of {total} {what} tokens")))
}

/// `base` × `multiplier` / 10^9, truncated toward zero, as a nano-USD amount.
pub fn apply_multiplier(base: u128, multiplier: u64) -> Result<i64, CostError> {
    let scaled = base
        .checked_mul(u128::from(multiplier))
        .ok_or_else(|| overflow(format!("{base} nano-USD × {multiplier} / 10^9")))?
        / u128::from(MULTIPLIER_ONE);
    i64::try_from(scaled).map_err(|_| overflow(format!("{scaled} nano-USD")))
}

fn overflow(what: String) -> CostError {
    CostError::Overflow(format!(
        "{what} overflows a nano-USD amount (at most {})",
        i64::MAX
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Prices = Prices {
        input: Some(2_500),
        output: Some(10_000),
        cache_read_input: Some(1_250),
        reasoning_output: Some(20_000),
    };

    fn tokens(prompt: u64, completion: u64) -> Tokens {
        Tokens {
            prompt,
            completion,
            cached_prompt: None,
            reasoning: None,
        }
    }

    fn chat(tokens: &Tokens, prices: &Prices, multiplier: u64) -> Result<i64, CostError> {
        cost(tokens, prices, Billed::PromptAndCompletion, multiplier)
    }

    #[test]
    fn plain_prompt_and_completion() {
        assert_eq!(
            chat(&tokens(1_000, 500), &FULL, MULTIPLIER_ONE),
            Ok(1_000 * 2_500 + 500 * 10_000)
        );
    }

    #[test]
    fn cached_tokens_use_the_cache_price_only_when_both_are_known() {
        let cached = Tokens {
            cached_prompt: Some(400),
            ..tokens(1_000, 0)
        };
        assert_eq!(
            chat(&cached, &FULL, MULTIPLIER_ONE),
            Ok(600 * 2_500 + 400 * 1_250)
        );
        let no_cache_price = Prices {
            cache_read_input: None,
            ..FULL
        };
        assert_eq!(
            chat(&cached, &no_cache_price, MULTIPLIER_ONE),
            Ok(1_000 * 2_500)
        );
        assert_eq!(
            chat(&tokens(1_000, 0), &FULL, MULTIPLIER_ONE),
            Ok(1_000 * 2_500)
        );
    }

    #[test]
    fn reasoning_tokens_use_the_reasoning_price_only_when_both_are_known() {
        let reasoning = Tokens {
            reasoning: Some(300),
            ..tokens(0, 1_000)
        };
        assert_eq!(
            chat(&reasoning, &FULL, MULTIPLIER_ONE),
            Ok(700 * 10_000 + 300 * 20_000)
        );
        let no_reasoning_price = Prices {
            reasoning_output: None,
            ..FULL
        };
        assert_eq!(
            chat(&reasoning, &no_reasoning_price, MULTIPLIER_ONE),
            Ok(1_000 * 10_000)
        );
    }

    #[test]
    fn special_counts_above_the_total_are_capped() {
        let odd = Tokens {
            prompt: 10,
            completion: 10,
            cached_prompt: Some(50),
            reasoning: Some(50),
        };
        assert_eq!(
            chat(&odd, &FULL, MULTIPLIER_ONE),
            Ok(10 * 1_250 + 10 * 20_000)
        );
    }

    #[test]
    fn multipliers_apply_exactly_and_truncate_toward_zero() {
        let t = tokens(1, 0);
        let one_token = |price: u64, multiplier: u64| {
            let prices = Prices {
                input: Some(price),
                output: Some(0),
                ..Prices::default()
            };
            chat(&t, &prices, multiplier)
        };
        assert_eq!(one_token(10, 300_000_000), Ok(3));
        assert_eq!(one_token(7, 300_000_000), Ok(2));
        assert_eq!(one_token(3, 1_250_000_000), Ok(3));
        assert_eq!(one_token(4, 1_250_000_000), Ok(5));
        assert_eq!(one_token(5, 2_000_000_000), Ok(10));
        assert_eq!(one_token(1, 999_999_999), Ok(0));
        assert_eq!(one_token(u64::MAX, 0), Ok(0));
    }

    #[test]
    fn embeddings_bill_prompt_tokens_only_and_need_no_output_price() {
        let prompt_only = Prices {
            output: None,
            ..FULL
        };
        assert_eq!(
            cost(
                &tokens(1_000, 999),
                &prompt_only,
                Billed::PromptOnly,
                MULTIPLIER_ONE
            ),
            Ok(1_000 * 2_500)
        );
        assert!(prompt_only.can_price(Billed::PromptOnly));
        assert!(!prompt_only.can_price(Billed::PromptAndCompletion));
    }

    #[test]
    fn missing_prices_are_named() {
        assert_eq!(
            chat(&tokens(1, 1), &Prices::default(), MULTIPLIER_ONE),
            Err(CostError::MissingPrice("input"))
        );
        let input_only = Prices {
            input: Some(1),
            ..Prices::default()
        };
        assert_eq!(
            chat(&tokens(1, 1), &input_only, MULTIPLIER_ONE),
            Err(CostError::MissingPrice("output"))
        );
    }

    #[test]
    fn zero_usage_costs_nothing() {
        assert_eq!(chat(&tokens(0, 0), &FULL, 2 * MULTIPLIER_ONE), Ok(0));
    }

    #[test]
    fn the_largest_cost_that_fits_is_exact_and_one_more_overflows() {
        let one_nano = Prices {
            input: Some(1),
            output: Some(0),
            ..Prices::default()
        };
        let max = u64::try_from(i64::MAX).unwrap();
        assert_eq!(
            chat(&tokens(max, 0), &one_nano, MULTIPLIER_ONE),
            Ok(i64::MAX)
        );
        assert!(matches!(
            chat(&tokens(max + 1, 0), &one_nano, MULTIPLIER_ONE),
            Err(CostError::Overflow(_))
        ));
        // Huge before the multiplier, small after it: exact, no false overflow.
        assert_eq!(
            chat(&tokens(u64::MAX, 0), &one_nano, 1),
            Ok(i64::try_from(u64::MAX / 1_000_000_000).unwrap())
        );
    }

    #[test]
    fn products_beyond_u128_overflow_instead_of_wrapping() {
        let huge = Prices {
            input: Some(u64::MAX),
            output: Some(u64::MAX),
            cache_read_input: Some(u64::MAX),
            reasoning_output: Some(u64::MAX),
        };
        let all = tokens(u64::MAX, u64::MAX);
        let error = chat(&all, &huge, u64::MAX).unwrap_err();
        assert!(matches!(error, CostError::Overflow(_)), "{error:?}");
        assert!(error.to_string().contains("overflows"), "{error}");
    }

    #[test]
    fn prices_are_looked_up_by_upstream_model_then_logical_model() {
        assert_eq!(
            lookup_order("gpt-4o-2024", "gpt-4o"),
            ["gpt-4o-2024", "gpt-4o"]
        );
        assert_eq!(lookup_order("gpt-4o", "gpt-4o"), ["gpt-4o"]);
    }
}
