//! [`ChunkerParams`]: the min/avg/max chunk sizes every writer of a
//! repository must share, and [`Chunking`]: those or a fixed chunk size.
//! Owns their validation against what FastCDC v2020 accepts; never decides
//! which sizes suit which data.

use fastcdc::v2020;
use thiserror::Error;

/// Chunk size limits in bytes. Every chunk but a stream's last is at least
/// `min_size` and at most `max_size` long; `avg_size` sets the cut mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

/// Why a set of chunk sizes was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamsError {
    #[error("chunk sizes must satisfy min <= avg <= max (got {min}/{avg}/{max})")]
    Order { min: u32, avg: u32, max: u32 },
    #[error("{which} chunk size {value} is outside FastCDC's range {low}..={high}")]
    OutOfRange {
        which: &'static str,
        value: u32,
        low: usize,
        high: usize,
    },
    #[error("{which} chunk size {value} must be even")]
    Odd { which: &'static str, value: u32 },
    #[error("fixed chunk size {0} is outside {low}..={high}", low = Chunking::FIXED_MIN, high = Chunking::FIXED_MAX)]
    FixedSize(u32),
}

/// How a file is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// FastCDC v2020 with these sizes: boundaries follow content, so an
    /// insertion shifts only the chunks around it.
    ContentDefined(ChunkerParams),
    /// Every chunk this many bytes long (the last one possibly shorter):
    /// for files changed in place in aligned pages, where a changed page
    /// should change exactly one chunk.
    Fixed(u32),
}

impl Chunking {
    pub const FIXED_MIN: u32 = 512;
    pub const FIXED_MAX: u32 = 16 * 1024 * 1024;

    pub fn validate(&self) -> Result<(), ParamsError> {
        match *self {
            Chunking::ContentDefined(params) => params.validate(),
            Chunking::Fixed(size) if (Self::FIXED_MIN..=Self::FIXED_MAX).contains(&size) => Ok(()),
            Chunking::Fixed(size) => Err(ParamsError::FixedSize(size)),
        }
    }
}

/// `fastcdc MIN/AVG/MAX` or `fixed SIZE`, sizes in bytes.
impl std::fmt::Display for Chunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunking::ContentDefined(params) => write!(
                f,
                "fastcdc {}/{}/{}",
                params.min_size, params.avg_size, params.max_size
            ),
            Chunking::Fixed(size) => write!(f, "fixed {size}"),
        }
    }
}

impl From<ChunkerParams> for Chunking {
    fn from(params: ChunkerParams) -> Self {
        Chunking::ContentDefined(params)
    }
}

impl From<&ChunkerParams> for Chunking {
    fn from(params: &ChunkerParams) -> Self {
        Chunking::ContentDefined(*params)
    }
}

impl From<&Chunking> for Chunking {
    fn from(chunking: &Chunking) -> Self {
        *chunking
    }
}

impl ChunkerParams {
    /// The default profile: 4 KiB / 16 KiB / 64 KiB. Small enough that a
    /// database or vector file changed in scattered pages re-stores little.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 4 * 1024,
        avg_size: 16 * 1024,
        max_size: 64 * 1024,
    };

    /// Validated sizes.
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self, ParamsError> {
        let params = ChunkerParams {
            min_size,
            avg_size,
            max_size,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the sizes against FastCDC v2020's limits; params read from a
    /// repository go through this before any chunking.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let checks = [
            ("min", self.min_size, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
            ("avg", self.avg_size, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
            ("max", self.max_size, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX),
        ];
        for (which, value, low, high) in checks {
            if (value as usize) < low || (value as usize) > high {
                return Err(ParamsError::OutOfRange {
                    which,
                    value,
                    low,
                    high,
                });
            }
            if value % 2 != 0 {
                return Err(ParamsError::Odd { which, value });
            }
        }
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return Err(ParamsError::Order {
                min: self.min_size,
                avg: self.avg_size,
                max: self.max_size,
            });
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(ChunkerParams::DEFAULT.validate(), Ok(()));
    }

    #[test]
    fn rejects_disordered_sizes() {
        assert!(matches!(
            ChunkerParams::new(8192, 4096, 65536),
            Err(ParamsError::Order { .. })
        ));
    }

    #[test]
    fn rejects_sizes_fastcdc_cannot_use() {
        assert!(matches!(
            ChunkerParams::new(16, 4096, 65536),
            Err(ParamsError::OutOfRange { which: "min", .. })
        ));
        assert!(matches!(
            ChunkerParams::new(4096, 8193, 65536),
            Err(ParamsError::Odd { which: "avg", .. })
        ));
    }

    #[test]
    fn fixed_sizes_are_bounded() {
        assert_eq!(Chunking::Fixed(4096).validate(), Ok(()));
        assert_eq!(
            Chunking::Fixed(0).validate(),
            Err(ParamsError::FixedSize(0))
        );
        assert!(Chunking::Fixed(Chunking::FIXED_MAX + 1).validate().is_err());
    }
}
