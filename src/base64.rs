//! Standard base64 with padding (RFC 4648): the Basic auth header, and bytes
//! fields (`uuid`, `data`) in Mesos JSON.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let bytes = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded standard base64; padding may be left out.
pub fn decode(input: &str) -> Result<Vec<u8>, String> {
    let text = input.trim_end_matches('=');
    if input.len() - text.len() > 2 || text.len() % 4 == 1 {
        return Err(format!("invalid base64 length {}", input.len()));
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits: u32 = 0;
    let mut held = 0;
    for c in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| format!("invalid base64 character {:?}", char::from(c)))?;
        bits = (bits << 6) | value as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc4648_vectors_both_ways() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("principal:secret", "cHJpbmNpcGFsOnNlY3JldA=="),
        ] {
            assert_eq!(encode(input.as_bytes()), expected);
            assert_eq!(decode(expected), Ok(input.as_bytes().to_vec()));
        }
        let uuid: Vec<u8> = (0..16).collect();
        assert_eq!(decode(&encode(&uuid)), Ok(uuid));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["Zg===", "Z", "Zm9v!", "Zm9vY"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
