//! The eight aggregation methods, with Python's exact float and NaN behaviour.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How a lower-precision archive summarises the points of a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregationMethod {
    /// Mean of the known values (type 1).
    Average,
    /// Sum of the known values (type 2).
    Sum,
    /// The newest known value (type 3).
    Last,
    /// Largest known value (type 4).
    Max,
    /// Smallest known value (type 5).
    Min,
    /// Sum over *all* slots with gaps as 0, divided by the slot count (type 6).
    AvgZero,
    /// Value with the largest magnitude, sign kept (type 7).
    AbsMax,
    /// Value with the smallest magnitude, sign kept (type 8).
    AbsMin,
}

impl AggregationMethod {
    /// All methods, in type-code order.
    pub const ALL: [AggregationMethod; 8] = [
        AggregationMethod::Average,
        AggregationMethod::Sum,
        AggregationMethod::Last,
        AggregationMethod::Max,
        AggregationMethod::Min,
        AggregationMethod::AvgZero,
        AggregationMethod::AbsMax,
        AggregationMethod::AbsMin,
    ];

    /// The on-disk type code (1..=8).
    pub fn type_code(self) -> u32 {
        match self {
            AggregationMethod::Average => 1,
            AggregationMethod::Sum => 2,
            AggregationMethod::Last => 3,
            AggregationMethod::Max => 4,
            AggregationMethod::Min => 5,
            AggregationMethod::AvgZero => 6,
            AggregationMethod::AbsMax => 7,
            AggregationMethod::AbsMin => 8,
        }
    }

    /// The method for an on-disk type code, if it is one of the eight.
    pub fn from_type_code(code: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(code).ok()?.checked_sub(1)?).copied()
    }

    /// whisper's name for the method (`avg_zero`, `absmax`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AggregationMethod::Average => "average",
            AggregationMethod::Sum => "sum",
            AggregationMethod::Last => "last",
            AggregationMethod::Max => "max",
            AggregationMethod::Min => "min",
            AggregationMethod::AvgZero => "avg_zero",
            AggregationMethod::AbsMax => "absmax",
            AggregationMethod::AbsMin => "absmin",
        }
    }

    /// Aggregates one lower-archive slot from the `k` higher slots that make it up (`None` = empty),
    /// exactly as whisper.py's `aggregate` on CPython 3.11. Returns `None` when no slot is known.
    pub fn aggregate(self, neighbours: &[Option<f64>]) -> Option<f64> {
        let known = neighbours.iter().flatten().copied();
        let first = known.clone().next()?;
        let value = match self {
            AggregationMethod::Average => known.fold(Mean::default(), Mean::push).value(),
            AggregationMethod::Sum => known.fold(0.0, py_add),
            AggregationMethod::Last => known.last().unwrap_or(first),
            // Python's max/min replace the best only on a strict comparison, so a NaN seen first sticks
            // and a later NaN is ignored.
            AggregationMethod::Max => known.fold(first, |best, v| if v > best { v } else { best }),
            AggregationMethod::Min => known.fold(first, |best, v| if v < best { v } else { best }),
            AggregationMethod::AbsMax => known.fold(first, |best, v| if v.abs() > best.abs() { v } else { best }),
            AggregationMethod::AbsMin => known.fold(first, |best, v| if v.abs() < best.abs() { v } else { best }),
            AggregationMethod::AvgZero => {
                // `x or 0`: None, 0.0 and -0.0 count as 0; NaN is truthy and stays.
                let sum = neighbours.iter().fold(0.0, |s, v| py_add(s, v.unwrap_or(0.0)));
                sum / neighbours.len() as f64
            }
        };
        Some(value)
    }
}

/// whisper's `average`: `float(sum(known)) / len(known)`, summed left to right with CPython's addition.
/// Also used directly by the propagation loop, which averages without building the neighbour list.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    pub(crate) fn push(self, v: f64) -> Mean {
        Mean { sum: py_add(self.sum, v), count: self.count + 1 }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// CPython's `a + b` on floats. When both are NaN, x86 returns one operand's NaN and CPython's compiled
/// code returns `b`'s (its sign survives into the file); Rust's codegen may pick `a`, so say it explicitly.
fn py_add(a: f64, b: f64) -> f64 {
    if a.is_nan() && b.is_nan() {
        b
    } else {
        a + b
    }
}

impl fmt::Display for AggregationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AggregationMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| Error::InvalidAggregationMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::AggregationMethod::*;
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for m in AggregationMethod::ALL {
            assert_eq!(AggregationMethod::from_type_code(m.type_code()), Some(m));
            assert_eq!(m.name().parse::<AggregationMethod>().unwrap(), m);
        }
        assert_eq!(AggregationMethod::from_type_code(0), None);
        assert_eq!(AggregationMethod::from_type_code(9), None);
        assert!("avg".parse::<AggregationMethod>().is_err());
    }

    #[test]
    fn python_float_semantics() {
        // Plain left-to-right summation (CPython 3.11), not compensated.
        let tenths = vec![Some(0.1); 10];
        assert_eq!(Sum.aggregate(&tenths), Some(0.9999999999999999));
        // A NaN first poisons max; later it is ignored.
        assert!(Max.aggregate(&[Some(f64::NAN), Some(1.0)]).unwrap().is_nan());
        assert_eq!(Max.aggregate(&[Some(1.0), Some(f64::NAN), Some(0.5)]), Some(1.0));
        // absmax keeps the first of equal magnitudes.
        assert_eq!(AbsMax.aggregate(&[Some(-3.0), Some(3.0)]), Some(-3.0));
        assert_eq!(AbsMin.aggregate(&[Some(2.0), Some(-1.0), Some(1.0)]), Some(-1.0));
        // avg_zero counts gaps as zero over all slots.
        assert_eq!(AvgZero.aggregate(&[Some(4.0), None, Some(0.0), None]), Some(1.0));
        assert_eq!(Average.aggregate(&[None, None]), None);
        assert_eq!(Last.aggregate(&[Some(1.0), None, Some(2.0), None]), Some(2.0));
    }

    #[test]
    fn nan_signs_follow_cpython() {
        // inf + -inf is x86's default NaN (sign set); adding a positive NaN after it keeps the later one,
        // as CPython's sum([inf + -inf, nan]) does (checked: 7ff8000000000000).
        // black_box: LLVM folds a constant inf + -inf to a positive NaN; the hardware gives a negative one.
        let negative_nan = std::hint::black_box(f64::INFINITY) + std::hint::black_box(f64::NEG_INFINITY);
        assert!(negative_nan.is_sign_negative());
        let sum = Sum.aggregate(&[Some(negative_nan), Some(f64::NAN)]).unwrap();
        assert_eq!(sum.to_bits(), 0x7ff8_0000_0000_0000);
        let sum = Sum.aggregate(&[Some(f64::NAN), Some(negative_nan)]).unwrap();
        assert_eq!(sum.to_bits(), 0xfff8_0000_0000_0000);
    }
}
