//! How values are laid out in bytes: the key layout of the `items` tree and the
//! versioned postcard envelopes of items, dead letters and state records. No sled here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::QueueError;

/// The format-version byte in front of every stored value written by this build.
/// Version 2 packs item payloads ([`encode_payload`]); version 1 stored them as bare
/// postcard.
pub(crate) const FORMAT_VERSION: u8 = 2;

/// The oldest format-version byte this build reads. Version 1 envelopes have the same
/// layout; only their payloads lack the tag byte ([`upgrade_payload`]).
pub(crate) const OLDEST_VERSION: u8 = 1;

/// Payload tag: postcard as is.
const PAYLOAD_PLAIN: u8 = 0;
/// Payload tag: one zstd frame holding the postcard bytes, its content size recorded.
const PAYLOAD_ZSTD: u8 = 1;
/// Payloads this long or longer are compressed. Report sessions (a parsed session
/// plus its raw XML, 10-30 KiB) shrink about six-fold; a queue that holds small values
/// keeps sled's memory small (see the module documentation).
const COMPRESS_FROM: usize = 512;
/// zstd's fastest regular level: ~5x on session XML at several hundred MB/s.
const ZSTD_LEVEL: i32 = 1;
/// The largest payload a frame may claim to hold (a report session is capped at
/// 64 MiB of XML); a corrupt frame header must not make the reader allocate more.
const MAX_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Ready positions of freshly pushed items start here; replayed items count down from
/// it, so they sort in front of everything pushed.
const FRONT: u64 = 1 << 63;

/// Longest queue name accepted, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// Key tags after the queue prefix.
const TAG_ITEM: u8 = b'i';
const TAG_READY: u8 = b'r';
const TAG_WAITING: u8 = b'w';

/// Where an item sits inside its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// In the ready index at this position.
    Ready(u64),
    /// In the waiting index, due at this many milliseconds since the Unix epoch.
    Waiting(u64),
}

/// An item in a queue: the caller's payload plus what the queue tracks about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ItemRecord {
    /// When the item entered this queue (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Which index entry points at the item.
    pub slot: Slot,
    /// The first error reported through `retry_later`.
    pub first_error: Option<String>,
    /// The latest error reported through `retry_later`.
    pub last_error: Option<String>,
    /// When the latest failed attempt was recorded.
    pub last_tried_ms: Option<u64>,
    /// The caller's value, postcard-encoded.
    pub payload: Vec<u8>,
}

/// An item moved to the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadRecord {
    /// The queue it came from and returns to on replay.
    pub queue: String,
    /// Failed attempts, counting the one that dead-lettered it.
    pub attempts: u32,
    /// When it entered the queue it died in.
    pub first_seen_ms: u64,
    /// When it was last tried (the moment it was dead-lettered).
    pub last_tried_ms: u64,
    /// The first error it met.
    pub first_error: String,
    /// The reason it was dead-lettered.
    pub last_error: String,
    /// Free-form context from the caller (stage, destination, ...).
    pub metadata: Vec<(String, String)>,
    /// The caller's value, postcard-encoded.
    pub payload: Vec<u8>,
}

/// Checks a queue name: non-empty, at most 1024 bytes, no control characters.
pub(crate) fn check_name(name: &str) -> Result<(), QueueError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "longer than 1024 bytes"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(QueueError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// The key prefix shared by everything of one queue: the name's length (u16, big
/// endian) then the name, so no queue's prefix is a prefix of another's.
pub(crate) fn queue_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 2 + 17);
    key.extend_from_slice(&(name.len() as u16).to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key of an item's record.
pub(crate) fn item_key(name: &str, id: u64) -> Vec<u8> {
    let mut key = queue_prefix(name);
    key.push(TAG_ITEM);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The prefix under which all item records of a queue sort by id.
pub(crate) fn item_prefix(name: &str) -> Vec<u8> {
    let mut key = queue_prefix(name);
    key.push(TAG_ITEM);
    key
}

/// The prefix of a queue's ready index.
pub(crate) fn ready_prefix(name: &str) -> Vec<u8> {
    let mut key = queue_prefix(name);
    key.push(TAG_READY);
    key
}

/// The prefix of a queue's waiting index.
pub(crate) fn waiting_prefix(name: &str) -> Vec<u8> {
    let mut key = queue_prefix(name);
    key.push(TAG_WAITING);
    key
}

/// The index key that points at an item in `slot`.
pub(crate) fn slot_key(name: &str, id: u64, slot: Slot) -> Vec<u8> {
    match slot {
        Slot::Ready(position) => {
            let mut key = ready_prefix(name);
            key.extend_from_slice(&position.to_be_bytes());
            key
        }
        Slot::Waiting(due_ms) => {
            let mut key = waiting_prefix(name);
            key.extend_from_slice(&due_ms.to_be_bytes());
            key.extend_from_slice(&id.to_be_bytes());
            key
        }
    }
}

/// The ready position of a freshly pushed item: behind everything already there.
pub(crate) fn back_position(id: u64) -> u64 {
    FRONT | id
}

/// The ready position of a replayed item: in front of everything already there, and
/// the larger `fresh` the further in front.
pub(crate) fn front_position(fresh: u64) -> u64 {
    FRONT - 1 - (fresh & (FRONT - 1))
}

/// Reads a big-endian u64 at `at` in `bytes`, if there are eight bytes there.
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes(slice.try_into().ok()?))
}

/// Postcard-encodes `value` behind the format-version byte.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, QueueError> {
    let mut bytes = vec![FORMAT_VERSION];
    postcard::to_io(value, &mut bytes).map_err(|e| QueueError::Encode {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

/// Decodes a versioned value, naming `place` and `key` in any error.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    place: impl Fn() -> String,
    key: impl Fn() -> String,
) -> Result<T, QueueError> {
    match bytes.first() {
        Some(&version) if (OLDEST_VERSION..=FORMAT_VERSION).contains(&version) => {
            decode_postcard(&bytes[1..]).map_err(|reason| QueueError::Decode {
                place: place(),
                key: key(),
                reason,
            })
        }
        Some(&version) => Err(QueueError::UnknownVersion {
            place: place(),
            key: key(),
            version,
        }),
        None => Err(QueueError::Decode {
            place: place(),
            key: key(),
            reason: "empty value".to_owned(),
        }),
    }
}

/// Encodes a caller's value as a payload: a tag byte, then its postcard bytes, either
/// as they are or, from [`COMPRESS_FROM`] bytes on, as one zstd frame. No version byte:
/// it travels inside an envelope that has one.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(
    value: &T,
    what: &str,
) -> Result<Vec<u8>, QueueError> {
    let encode_error = |reason: String| QueueError::Encode {
        what: what.to_owned(),
        reason,
    };
    let mut plain = vec![PAYLOAD_PLAIN];
    postcard::to_io(value, &mut plain).map_err(|e| encode_error(e.to_string()))?;
    if plain.len() - 1 < COMPRESS_FROM {
        return Ok(plain);
    }
    let frame = zstd::bulk::compress(&plain[1..], ZSTD_LEVEL)
        .map_err(|e| encode_error(format!("compressing: {e}")))?;
    let mut packed = Vec::with_capacity(frame.len() + 1);
    packed.push(PAYLOAD_ZSTD);
    packed.extend_from_slice(&frame);
    Ok(packed)
}

/// Decodes a caller's payload written by [`encode_payload`], naming `place` and `key`
/// in any error. Trailing bytes are an error too: they mean the value was written as a
/// different type.
pub(crate) fn decode_payload<T: DeserializeOwned>(
    bytes: &[u8],
    place: impl Fn() -> String,
    key: impl Fn() -> String,
) -> Result<T, QueueError> {
    let decode_error = |reason: String| QueueError::Decode {
        place: place(),
        key: key(),
        reason,
    };
    match bytes.split_first() {
        Some((&PAYLOAD_PLAIN, postcard)) => decode_postcard(postcard).map_err(decode_error),
        Some((&PAYLOAD_ZSTD, frame)) => {
            let size = match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(size)) if size <= MAX_PAYLOAD_BYTES => size,
                Ok(Some(size)) => {
                    return Err(decode_error(format!(
                        "compressed payload claims {size} bytes"
                    )));
                }
                Ok(None) | Err(_) => {
                    return Err(decode_error(
                        "compressed payload has no valid header".into(),
                    ));
                }
            };
            let postcard = zstd::bulk::decompress(frame, size as usize)
                .map_err(|e| decode_error(format!("decompressing: {e}")))?;
            decode_postcard(&postcard).map_err(decode_error)
        }
        Some((tag, _)) => Err(decode_error(format!("unknown payload tag {tag}"))),
        None => Err(decode_error("empty payload".to_owned())),
    }
}

/// Brings the payload of an item or dead-letter record read from a value with format
/// `version` to the current packed form (version 1 stored bare postcard).
pub(crate) fn upgrade_payload(version: u8, payload: &mut Vec<u8>) {
    if version == 1 {
        payload.insert(0, PAYLOAD_PLAIN);
    }
}

/// A postcard value that fills `bytes` exactly.
fn decode_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over", rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_prefixes_never_prefix_each_other() {
        let short = item_prefix("a");
        let long = item_prefix("ab");
        assert!(!long.starts_with(&short));
        assert!(!short.starts_with(&long));
    }

    #[test]
    fn replayed_positions_sort_before_pushed_ones_and_later_replays_go_further_front() {
        assert!(front_position(10) < back_position(0));
        assert!(front_position(11) < front_position(10));
        assert!(back_position(5) < back_position(6));
    }

    #[test]
    fn waiting_keys_sort_by_due_time_then_id() {
        let early = slot_key("q", 9, Slot::Waiting(100));
        let late = slot_key("q", 1, Slot::Waiting(200));
        assert!(early < late);
    }

    #[test]
    fn an_unknown_version_byte_is_an_error_naming_place_and_key() {
        let err = decode::<u32>(&[7, 1], || "queue \"q\"".into(), || "item 3".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "decoding queue \"q\" key item 3: unknown format version 7"
        );
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let err = decode::<String>(
            &[FORMAT_VERSION, 0xff, 0xff],
            || "state".into(),
            || "k".into(),
        )
        .unwrap_err();
        assert!(matches!(err, QueueError::Decode { .. }), "{err}");
    }

    #[test]
    fn values_round_trip_behind_the_version_byte() {
        let bytes = encode(&("x".to_owned(), 5u64), "test").unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64) = decode(&bytes, String::new, String::new).unwrap();
        assert_eq!(back, ("x".to_owned(), 5));
    }

    #[test]
    fn payloads_round_trip_plain_when_small_and_compressed_when_large() {
        let small = encode_payload(&"x".to_owned(), "test").unwrap();
        assert_eq!(small[0], PAYLOAD_PLAIN);
        let large_value = "<session>".repeat(1000);
        let large = encode_payload(&large_value, "test").unwrap();
        assert_eq!(large[0], PAYLOAD_ZSTD);
        assert!(
            large.len() < large_value.len() / 10,
            "{} bytes",
            large.len()
        );
        let back: String = decode_payload(&large, String::new, String::new).unwrap();
        assert_eq!(back, large_value);
        let back: String = decode_payload(&small, String::new, String::new).unwrap();
        assert_eq!(back, "x");
    }

    #[test]
    fn version_1_items_with_bare_payloads_still_decode() {
        let record = ItemRecord {
            first_seen_ms: 1,
            attempts: 0,
            slot: Slot::Ready(5),
            first_error: None,
            last_error: None,
            last_tried_ms: None,
            payload: postcard::to_stdvec(&"old".to_owned()).unwrap(),
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_stdvec(&record).unwrap());
        let mut back: ItemRecord = decode(&bytes, String::new, String::new).unwrap();
        upgrade_payload(bytes[0], &mut back.payload);
        let value: String = decode_payload(&back.payload, String::new, String::new).unwrap();
        assert_eq!(value, "old");
    }

    #[test]
    fn a_damaged_compressed_payload_is_a_decode_error() {
        let mut packed = encode_payload(&"<session>".repeat(1000), "test").unwrap();
        let middle = packed.len() / 2;
        packed.truncate(middle);
        let err = decode_payload::<String>(&packed, || "q".into(), || "item 1".into()).unwrap_err();
        assert!(matches!(err, QueueError::Decode { .. }), "{err}");
        let err = decode_payload::<String>(&[9, 1], || "q".into(), || "item 1".into()).unwrap_err();
        assert!(err.to_string().contains("unknown payload tag 9"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("deliver/reports").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(1025)).is_err());
    }
}
