//! The content model: every committed state of a volume is an image that is zero
//! except for a 64 KiB pattern at offsets 0 and 2 MiB, one pattern per state ("E" =
//! empty, "A", "B", …), so a file is identified by its content alone. Images are
//! [`IMAGE`] bytes, or [`RESIZED`] after the resize case (the same pattern, zeros
//! beyond).

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub const MIB: u64 = 1 << 20;
pub const IMAGE: u64 = 4 * MIB;
pub const RESIZED: u64 = 6 * MIB;
const PATTERN_LEN: usize = 64 * 1024;
const PATTERN_OFFSETS: [u64; 2] = [0, 2 * MIB];
/// Every label a test writes.
const LABELS: &str = "EABCDFGH";

/// One committed state: its label at a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Content {
    pub label: char,
    pub size: u64,
}

impl Content {
    pub const fn of(label: char) -> Content {
        Content { label, size: IMAGE }
    }

    pub const fn resized(label: char) -> Content {
        Content {
            label,
            size: RESIZED,
        }
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.size {
            IMAGE => write!(f, "{}", self.label),
            size => write!(f, "{}@{}M", self.label, size / MIB),
        }
    }
}

/// What a file holds: a known state, or something no state is (a short, torn or
/// mixed file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Known(Content),
    Unknown { size: u64 },
}

impl Seen {
    pub fn known(self) -> Option<Content> {
        match self {
            Seen::Known(content) => Some(content),
            Seen::Unknown { .. } => None,
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Known(content) => write!(f, "{content}"),
            Seen::Unknown { size } => write!(f, "UNKNOWN({size} bytes)"),
        }
    }
}

/// The 64 KiB pattern of `label` ('E' has none: the empty image).
fn pattern(label: char) -> Vec<u8> {
    let seed = label as u8;
    (0..PATTERN_LEN)
        .map(|i| seed ^ ((i * 7 + i / 251) % 256) as u8)
        .map(|b| if b == 0 { seed } else { b })
        .collect()
}

type Models = Mutex<HashMap<Content, Arc<Vec<u8>>>>;

/// The whole image of `content`, built once.
pub fn model(content: Content) -> Arc<Vec<u8>> {
    static MODELS: OnceLock<Models> = OnceLock::new();
    let mut models = MODELS.get_or_init(Default::default).lock().unwrap();
    models
        .entry(content)
        .or_insert_with(|| {
            let mut image = vec![0u8; content.size as usize];
            if content.label != 'E' {
                for offset in PATTERN_OFFSETS {
                    let at = offset as usize;
                    image[at..at + PATTERN_LEN].copy_from_slice(&pattern(content.label));
                }
            }
            Arc::new(image)
        })
        .clone()
}

/// What the file at `path` holds; `None` when it does not exist.
pub fn identify(path: &Path) -> Option<Seen> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    let size = data.len() as u64;
    if size != IMAGE && size != RESIZED {
        return Some(Seen::Unknown { size });
    }
    let found = LABELS
        .chars()
        .map(|label| Content { label, size })
        .find(|&c| model(c).as_slice() == data.as_slice());
    Some(found.map_or(Seen::Unknown { size }, Seen::Known))
}

/// Writes `label`'s pattern into an image (no fsync: the caller decides).
pub fn write_label(file: &std::fs::File, label: char) {
    for offset in PATTERN_OFFSETS {
        file.write_all_at(&pattern(label), offset)
            .expect("write a pattern");
    }
}
