//! Request bodies a client sent compressed (`Content-Encoding`): Codex CLI sends its larger
//! `/v1/responses` bodies as `zstd`, other clients `gzip`. The gateway reads a request's JSON
//! (its model, its usage estimate) and sends upstream a body it writes itself, so it decodes
//! first, to at most the body limit: a small compressed body that would expand past it (a
//! "zip bomb") is refused `413` as soon as the limit is passed, never expanded whole. `zstd`,
//! `gzip` (`x-gzip`), `deflate` (zlib, or raw as some clients send it) and `identity` are
//! read, in the order they were applied; any other coding is refused (`415`), and data that
//! does not decode is the request's fault (`400`).

use std::io::Read;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::CONTENT_ENCODING;

use super::body::BodyError;

/// The most codings one body may have been put through.
const MAX_CODINGS: usize = 3;

/// A compressed body larger than this is decoded on the blocking pool, not on the connection
/// thread, whose other connections would wait for it.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// The largest zstd window a body may ask for (2^24 = 16 MiB of decoder memory): zstd's own
/// default allows 128 MiB. Codex CLI compresses at level 3, whose window is 2^21.
const ZSTD_MAX_WINDOW_LOG: u32 = 24;

/// One content coding the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
        }
    }
}

/// The codings `headers` say the body went through, in the order they were applied.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, BodyError> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            BodyError::UnsupportedEncoding("a Content-Encoding that is not text".to_owned())
        })?;
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name.to_ascii_lowercase().as_str() {
                "identity" => {}
                "gzip" | "x-gzip" => codings.push(Coding::Gzip),
                "deflate" => codings.push(Coding::Deflate),
                "zstd" => codings.push(Coding::Zstd),
                _ => {
                    return Err(BodyError::UnsupportedEncoding(format!(
                        "the content coding `{name}`"
                    )));
                }
            }
        }
    }
    if codings.len() > MAX_CODINGS {
        return Err(BodyError::UnsupportedEncoding(format!(
            "{} content codings on one body (at most {MAX_CODINGS})",
            codings.len()
        )));
    }
    Ok(codings)
}

/// `body` as it was before the codings `headers` name, at most `limit` bytes; `body` itself
/// when it names none.
pub async fn decode_request(
    headers: &HeaderMap,
    body: Bytes,
    limit: u64,
) -> Result<Bytes, BodyError> {
    let codings = codings(headers)?;
    if codings.is_empty() {
        return Ok(body);
    }
    if body.len() <= INLINE_DECODE_BYTES {
        return decode_all(&codings, body, limit);
    }
    tokio::task::spawn_blocking(move || decode_all(&codings, body, limit))
        .await
        .map_err(|error| BodyError::Unreadable(format!("the body's decoding failed: {error}")))?
}

fn decode_all(codings: &[Coding], mut body: Bytes, limit: u64) -> Result<Bytes, BodyError> {
    for &coding in codings.iter().rev() {
        body = decode(coding, &body, limit)?;
    }
    Ok(body)
}

fn decode(coding: Coding, data: &[u8], limit: u64) -> Result<Bytes, BodyError> {
    match coding {
        Coding::Gzip => read_at_most(flate2::read::MultiGzDecoder::new(data), coding, limit),
        // RFC 9110 `deflate` is zlib-wrapped; some clients send the raw stream under the name.
        Coding::Deflate => read_at_most(flate2::read::ZlibDecoder::new(data), coding, limit)
            .or_else(|error| match error {
                BodyError::Undecodable(_) => {
                    read_at_most(flate2::read::DeflateDecoder::new(data), coding, limit)
                }
                other => Err(other),
            }),
        Coding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|_| undecodable(coding))?;
            decoder
                .window_log_max(ZSTD_MAX_WINDOW_LOG)
                .map_err(|_| undecodable(coding))?;
            read_at_most(decoder, coding, limit)
        }
    }
}

fn undecodable(coding: Coding) -> BodyError {
    BodyError::Undecodable(format!(
        "the request body is not valid {} data",
        coding.name()
    ))
}

/// Reads `reader` to its end, failing as soon as it yields more than `limit` bytes.
fn read_at_most(reader: impl Read, coding: Coding, limit: u64) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| undecodable(coding))?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use hyper::header::HeaderValue;

    fn encoded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn each_coding_is_undone_in_reverse_order_of_application() {
        let json = Bytes::from_static(br#"{"model":"m","input":"hi"}"#);
        let zstd = zstd::encode_all(&json[..], 3).unwrap();
        let zlib = {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&json).unwrap();
            encoder.finish().unwrap()
        };
        let raw_deflate = {
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&json).unwrap();
            encoder.finish().unwrap()
        };
        let gzip_then_zstd = zstd::encode_all(&gzip(&json)[..], 3).unwrap();
        for (header, body) in [
            ("zstd", zstd),
            ("GZIP", gzip(&json)),
            ("x-gzip", gzip(&json)),
            ("deflate", zlib),
            ("deflate", raw_deflate),
            ("gzip, zstd", gzip_then_zstd),
            ("identity", json.to_vec()),
        ] {
            let decoded = decode_request(&encoded(header), Bytes::from(body), 1024)
                .await
                .unwrap();
            assert_eq!(decoded, json, "{header}");
        }
        assert_eq!(
            decode_request(&HeaderMap::new(), json.clone(), 1024)
                .await
                .unwrap(),
            json
        );
    }

    #[tokio::test]
    async fn a_body_that_expands_past_the_limit_is_too_large_and_others_are_refused() {
        let bomb = zstd::encode_all(&vec![b' '; 1 << 20][..], 19).unwrap();
        assert!(bomb.len() < 1024);
        assert_eq!(
            decode_request(&encoded("zstd"), Bytes::from(bomb), 4096).await,
            Err(BodyError::TooLarge { limit: 4096 })
        );
        // Large enough (it hardly compresses) to be decoded off the connection thread.
        let mut state = 0x2545_f491_u32;
        let spread: Vec<u8> = (0..200_000)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()
            })
            .collect();
        let large = Bytes::from(gzip(&spread));
        assert!(large.len() > INLINE_DECODE_BYTES);
        assert_eq!(
            decode_request(&encoded("gzip"), large, 1 << 20)
                .await
                .unwrap()
                .len(),
            spread.len()
        );
        assert!(matches!(
            decode_request(&encoded("zstd"), Bytes::from_static(b"{\"model\":1}"), 4096).await,
            Err(BodyError::Undecodable(_))
        ));
        for refused in ["br", "compress", "gzip, gzip, gzip, gzip"] {
            assert!(
                matches!(
                    decode_request(&encoded(refused), Bytes::from_static(b"{}"), 4096).await,
                    Err(BodyError::UnsupportedEncoding(_))
                ),
                "{refused}"
            );
        }
    }
}
