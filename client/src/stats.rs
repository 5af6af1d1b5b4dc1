//! The figures of a client run, as `client --stats` prints them, and a latency histogram that
//! several runs can be merged by.
//!
//! A run's [`Summary`] has two printed forms: [`Summary::line`], the one `key=value` line that
//! `client --stats` has always printed (for people and `grep`), and [`Summary::to_json`], the one
//! JSON object of `client --stats=json` (for programs), which carries the same counts plus the
//! latencies as a [`Histogram`]. Percentiles cannot be combined: the median of four clients'
//! medians is not the median of their requests. Histograms can: adding two histograms' bucket
//! counts gives exactly the histogram of both runs' values together, and percentiles read from
//! it are those of all the requests, within the histogram's stated error. [`Summary::merge`] does
//! that for runs side by side (`client --merge-stats`, which `scripts/bench.sh` uses for its rows
//! with several clients).
//!
//! The histogram is log-linear, the layout of HdrHistogram: values below 2^8 each have a bucket
//! of their own; above, every power-of-two range `[2^k, 2^(k+1))` is cut into 128 buckets of equal
//! width. A bucket is never wider than 1/128 of its lowest value, so a percentile read from the
//! histogram (the highest value of the bucket the percentile falls in) is never below the exact
//! nearest-rank percentile and at most [`RELATIVE_ERROR`] (1/128, 0.78%) above it. Every `u64`
//! fits (7,424 buckets, allocated only up to the largest value recorded).
//!
//! The JSON is written and read here, without a JSON library: every field is a number, and the
//! reader accepts exactly the JSON subset the writer produces (objects, arrays, numbers), with
//! unknown fields skipped so that a later client may add some.

use std::fmt::Write as _;

/// Values below `2^PRECISION_BITS` are exact; above, each power-of-two range has
/// `2^(PRECISION_BITS - 1)` buckets.
pub const PRECISION_BITS: u32 = 8;

/// The most a percentile read from a [`Histogram`] can exceed the exact one, relative to it.
pub const RELATIVE_ERROR: f64 = 1.0 / (1u64 << (PRECISION_BITS - 1)) as f64;

/// Values with a bucket of their own: `0..EXACT_BELOW`.
const EXACT_BELOW: u64 = 1 << PRECISION_BITS;
/// Buckets in each power-of-two range above `EXACT_BELOW`.
const BUCKETS_PER_RANGE: u64 = 1 << (PRECISION_BITS - 1);
/// Enough buckets for `u64::MAX`.
const BUCKET_COUNT: usize =
    (EXACT_BELOW + (64 - PRECISION_BITS as u64) * BUCKETS_PER_RANGE) as usize;

/// Counts of values in log-linear buckets (see the module docs): record values, add histograms
/// together, read percentiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count per bucket index; only as long as the highest non-empty bucket.
    counts: Vec<u64>,
    /// The sum of `counts`.
    total: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.add(bucket_of(value), 1);
    }

    /// How many values were recorded (or merged in).
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds `other`'s counts to this one's: afterwards this is exactly the histogram of the
    /// values of both.
    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, &count) in other.counts.iter().enumerate() {
            if count > 0 {
                self.add(bucket, count);
            }
        }
    }

    /// The nearest-rank percentile (`percent` of the values are at or below it; 0 to 100), as
    /// the highest value of its bucket: never below the exact percentile, at most
    /// [`RELATIVE_ERROR`] above it. 0 when the histogram is empty.
    pub fn percentile(&self, percent: u8) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = nearest_rank(self.total, percent);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest_in(bucket);
            }
        }
        // Unreachable while `total` is the sum of `counts`; the top bucket is the safe answer.
        highest_in(self.counts.len().saturating_sub(1))
    }

    /// The non-empty buckets, lowest first, as (lowest value of the bucket, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(bucket, &count)| (lowest_in(bucket), count))
    }

    /// Adds `count` values to the bucket that holds `value` (the inverse of [`buckets`](Self::buckets)).
    pub fn record_n(&mut self, value: u64, count: u64) {
        if count > 0 {
            self.add(bucket_of(value), count);
        }
    }

    fn add(&mut self, bucket: usize, count: u64) {
        debug_assert!(
            bucket < BUCKET_COUNT,
            "bucket_of never goes past u64::MAX's"
        );
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] = self.counts[bucket].saturating_add(count);
        self.total = self.total.saturating_add(count);
    }
}

/// The bucket index of `value`.
fn bucket_of(value: u64) -> usize {
    if value < EXACT_BELOW {
        return value as usize;
    }
    // `value` has `bits` significant bits; dropping all but the top PRECISION_BITS leaves a
    // mantissa in [BUCKETS_PER_RANGE, EXACT_BELOW).
    let bits = u64::BITS - value.leading_zeros();
    let shift = bits - PRECISION_BITS;
    let mantissa = value >> shift;
    (EXACT_BELOW + u64::from(shift - 1) * BUCKETS_PER_RANGE + (mantissa - BUCKETS_PER_RANGE))
        as usize
}

/// The lowest value in `bucket`.
fn lowest_in(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < EXACT_BELOW {
        return bucket;
    }
    let above = bucket - EXACT_BELOW;
    let shift = above / BUCKETS_PER_RANGE + 1;
    let mantissa = above % BUCKETS_PER_RANGE + BUCKETS_PER_RANGE;
    mantissa << shift
}

/// The highest value in `bucket`.
fn highest_in(bucket: usize) -> u64 {
    if (bucket as u64) < EXACT_BELOW {
        return bucket as u64;
    }
    let shift = (bucket as u64 - EXACT_BELOW) / BUCKETS_PER_RANGE + 1;
    lowest_in(bucket) + ((1u64 << shift) - 1)
}

/// The 1-based rank of the nearest-rank percentile among `total` values.
fn nearest_rank(total: u64, percent: u8) -> u64 {
    let percent = u64::from(percent.min(100));
    // In u128: `total * percent` must not overflow.
    let rank = (u128::from(total) * u128::from(percent)).div_ceil(100);
    u64::try_from(rank).unwrap_or(u64::MAX).max(1)
}

/// The nearest-rank percentile of sorted values, exactly; 0 when there are none.
pub fn exact_percentile(sorted: &[u64], percent: u8) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = nearest_rank(sorted.len() as u64, percent);
    sorted[usize::try_from(rank)
        .unwrap_or(usize::MAX)
        .min(sorted.len())
        - 1]
}

/// What a client run did: the counts `client --stats` prints, and its latencies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Requests issued.
    pub requests: u64,
    /// Requests answered.
    pub replies: u64,
    /// Requests that got no reply (timed out after all their tries).
    pub failed: u64,
    /// Requests sent more than once (answered or failed).
    pub retried: u64,
    /// Replies that no outstanding request was waiting for (late or duplicate), dropped by the
    /// asynchronous client; always 0 for the synchronous one, whose late replies go to closed
    /// sockets. Only in the JSON form.
    pub dropped_replies: u64,
    /// Wall-clock length of the run.
    pub seconds: f64,
    /// The median latency, in microseconds: exact for one run, from the histogram once merged.
    pub p50_us: u64,
    /// The 99th-percentile latency, in microseconds, like `p50_us`.
    pub p99_us: u64,
    /// The latencies of the answered requests, in microseconds, counted from the first send.
    pub latency_us: Histogram,
    /// With several brokers, how many replies came through each, in the order of `-c`; empty
    /// with one broker (and then left out of both printed forms).
    pub per_broker: Vec<u64>,
}

impl Summary {
    /// The summary of one run, with exact percentiles of `latencies_us` (which it sorts).
    pub fn of_run(counts: Counts, latencies_us: &mut [u64], seconds: f64) -> Self {
        latencies_us.sort_unstable();
        let mut latency_us = Histogram::new();
        for &latency in latencies_us.iter() {
            latency_us.record(latency);
        }
        Summary {
            requests: counts.requests,
            replies: counts.replies,
            failed: counts.failed,
            retried: counts.retried,
            dropped_replies: counts.dropped_replies,
            seconds,
            p50_us: exact_percentile(latencies_us, 50),
            p99_us: exact_percentile(latencies_us, 99),
            latency_us,
            per_broker: Vec::new(),
        }
    }

    /// Replies per second over the run; 0 for a run of no time.
    pub fn req_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.replies as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Adds another run that ran side by side with this one: counts and histograms add up, the
    /// run lasts as long as the longer of the two, and the percentiles become those of the
    /// merged histogram (within [`RELATIVE_ERROR`] of the exact ones of all the requests).
    pub fn merge(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.replies += other.replies;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dropped_replies += other.dropped_replies;
        self.seconds = self.seconds.max(other.seconds);
        self.latency_us.merge(&other.latency_us);
        if self.per_broker.len() < other.per_broker.len() {
            self.per_broker.resize(other.per_broker.len(), 0);
        }
        for (mine, theirs) in self.per_broker.iter_mut().zip(&other.per_broker) {
            *mine += theirs;
        }
        self.p50_us = self.latency_us.percentile(50);
        self.p99_us = self.latency_us.percentile(99);
    }

    /// The one line of `client --stats`:
    /// `requests=N replies=N failed=N retried=N seconds=S req_per_s=R p50_us=X p99_us=Y`, and
    /// with several brokers ` per_broker=N,N` (replies through each, in `-c` order).
    pub fn line(&self) -> String {
        let mut line = format!(
            "requests={} replies={} failed={} retried={} seconds={:.3} req_per_s={:.0} p50_us={} p99_us={}",
            self.requests,
            self.replies,
            self.failed,
            self.retried,
            self.seconds,
            self.req_per_s(),
            self.p50_us,
            self.p99_us,
        );
        if !self.per_broker.is_empty() {
            line.push_str(" per_broker=");
            line.push_str(&join(&self.per_broker));
        }
        line
    }

    /// The one JSON object of `client --stats=json`, on one line: the fields of [`line`](Self::line)
    /// with the same names and values, `dropped_replies`, and `latency_us`, the histogram:
    ///
    /// ```text
    /// {"requests":3,"replies":2,"failed":1,"retried":1,"dropped_replies":0,"seconds":0.500,
    ///  "req_per_s":4,"p50_us":100,"p99_us":300,
    ///  "latency_us":{"precision_bits":8,"relative_error":0.0078125,"count":2,
    ///                "buckets":[[100,1],[300,1]]}}
    /// ```
    ///
    /// `buckets` lists the non-empty buckets as `[lowest value of the bucket, count]`, lowest
    /// first; `count` is their sum.
    pub fn to_json(&self) -> String {
        let mut json = format!(
            "{{\"requests\":{},\"replies\":{},\"failed\":{},\"retried\":{},\"dropped_replies\":{},\
             \"seconds\":{:.3},\"req_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\
             \"latency_us\":{{\"precision_bits\":{PRECISION_BITS},\"relative_error\":{RELATIVE_ERROR},\
             \"count\":{},\"buckets\":[",
            self.requests,
            self.replies,
            self.failed,
            self.retried,
            self.dropped_replies,
            self.seconds,
            self.req_per_s(),
            self.p50_us,
            self.p99_us,
            self.latency_us.count(),
        );
        for (index, (lowest, count)) in self.latency_us.buckets().enumerate() {
            let comma = if index == 0 { "" } else { "," };
            // Writing to a String cannot fail.
            let _ = write!(json, "{comma}[{lowest},{count}]");
        }
        json.push_str("]}");
        if !self.per_broker.is_empty() {
            let _ = write!(json, ",\"per_broker\":[{}]", join(&self.per_broker));
        }
        json.push('}');
        json
    }

    /// Reads what [`to_json`](Self::to_json) wrote. Fields it does not know are skipped; every
    /// field it writes must be there, and the histogram must have the same precision as this
    /// client's.
    pub fn from_json(text: &str) -> Result<Summary, ParseError> {
        let value = json::parse(text)?;
        let top = value.as_object("the summary")?;
        let histogram = json::field(top, "latency_us")?.as_object("latency_us")?;
        let precision = json::field(histogram, "precision_bits")?.as_u64("precision_bits")?;
        if precision != u64::from(PRECISION_BITS) {
            return Err(ParseError::Precision(precision));
        }
        let mut latency_us = Histogram::new();
        for bucket in json::field(histogram, "buckets")?.as_array("buckets")? {
            match bucket.as_array("a bucket")? {
                [lowest, count] => {
                    latency_us.record_n(lowest.as_u64("a bucket")?, count.as_u64("a bucket")?)
                }
                _ => return Err(ParseError::Field("a bucket", "a [value, count] pair")),
            }
        }
        let number = |name: &'static str| json::field(top, name)?.as_u64(name);
        // Optional: written only with several brokers.
        let per_broker = match json::field(top, "per_broker") {
            Ok(counts) => counts
                .as_array("per_broker")?
                .iter()
                .map(|count| count.as_u64("per_broker"))
                .collect::<Result<Vec<u64>, ParseError>>()?,
            Err(_) => Vec::new(),
        };
        Ok(Summary {
            requests: number("requests")?,
            replies: number("replies")?,
            failed: number("failed")?,
            retried: number("retried")?,
            dropped_replies: number("dropped_replies")?,
            seconds: json::field(top, "seconds")?.as_f64("seconds")?,
            p50_us: number("p50_us")?,
            p99_us: number("p99_us")?,
            latency_us,
            per_broker,
        })
    }
}

/// `1,2,3`.
fn join(counts: &[u64]) -> String {
    counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The counts of a run, for [`Summary::of_run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests issued ([`Summary::requests`]).
    pub requests: u64,
    /// Requests answered ([`Summary::replies`]).
    pub replies: u64,
    /// Requests given up after all their tries ([`Summary::failed`]).
    pub failed: u64,
    /// Requests sent more than once ([`Summary::retried`]).
    pub retried: u64,
    /// Replies nothing was waiting for ([`Summary::dropped_replies`]).
    pub dropped_replies: u64,
}

/// Why a `--stats=json` object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or JSON beyond the subset the client writes (strings as values, `true`, ...).
    #[error("not a client --stats=json object: expected {expected} at byte {at}")]
    Syntax {
        /// The byte offset in the text where reading stopped.
        at: usize,
        /// What the reader wanted there, e.g. "the end" or "an object, an array or a number".
        expected: &'static str,
    },
    /// A field the client always writes is missing.
    #[error("the field {0:?} is missing")]
    Missing(&'static str),
    /// A field has the wrong kind of value.
    #[error("{0} is not {1}")]
    Field(&'static str, &'static str),
    /// The histogram was written with another bucket layout: its counts cannot be added.
    #[error("the histogram has {0} precision bits, this client uses {PRECISION_BITS}")]
    Precision(u64),
}

/// The JSON subset of [`Summary::to_json`]: objects, arrays and numbers, keys without escapes.
mod json {
    use super::ParseError;

    #[derive(Debug)]
    pub(super) enum Value<'a> {
        /// The number's text, read as an integer or a float when asked for.
        Number(&'a str),
        Array(Vec<Value<'a>>),
        Object(Vec<(&'a str, Value<'a>)>),
    }

    impl<'a> Value<'a> {
        pub(super) fn as_object(
            &self,
            what: &'static str,
        ) -> Result<&[(&'a str, Value<'a>)], ParseError> {
            match self {
                Value::Object(fields) => Ok(fields),
                _ => Err(ParseError::Field(what, "an object")),
            }
        }

        pub(super) fn as_array(&self, what: &'static str) -> Result<&[Value<'a>], ParseError> {
            match self {
                Value::Array(items) => Ok(items),
                _ => Err(ParseError::Field(what, "an array")),
            }
        }

        pub(super) fn as_u64(&self, what: &'static str) -> Result<u64, ParseError> {
            match self {
                Value::Number(text) => text
                    .parse()
                    .map_err(|_| ParseError::Field(what, "a whole number")),
                _ => Err(ParseError::Field(what, "a number")),
            }
        }

        pub(super) fn as_f64(&self, what: &'static str) -> Result<f64, ParseError> {
            match self {
                Value::Number(text) => text
                    .parse()
                    .map_err(|_| ParseError::Field(what, "a number")),
                _ => Err(ParseError::Field(what, "a number")),
            }
        }
    }

    /// The value of the field `name`.
    pub(super) fn field<'v, 'a>(
        fields: &'v [(&'a str, Value<'a>)],
        name: &'static str,
    ) -> Result<&'v Value<'a>, ParseError> {
        fields
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
            .ok_or(ParseError::Missing(name))
    }

    /// Parses one value, surrounded by nothing but whitespace.
    pub(super) fn parse(text: &str) -> Result<Value<'_>, ParseError> {
        let mut parser = Parser { text, at: 0 };
        let value = parser.value(0)?;
        parser.skip_whitespace();
        if parser.at != text.len() {
            return Err(parser.expected("the end"));
        }
        Ok(value)
    }

    /// Deeper than this is not a summary (and must not overflow the stack).
    const MAX_DEPTH: usize = 8;

    struct Parser<'a> {
        text: &'a str,
        at: usize,
    }

    impl<'a> Parser<'a> {
        fn expected(&self, expected: &'static str) -> ParseError {
            ParseError::Syntax {
                at: self.at,
                expected,
            }
        }

        fn skip_whitespace(&mut self) {
            let rest = &self.text[self.at..];
            self.at += rest.len() - rest.trim_start().len();
        }

        fn peek(&mut self) -> Option<u8> {
            self.skip_whitespace();
            self.text.as_bytes().get(self.at).copied()
        }

        fn eat(&mut self, byte: u8, expected: &'static str) -> Result<(), ParseError> {
            if self.peek() == Some(byte) {
                self.at += 1;
                Ok(())
            } else {
                Err(self.expected(expected))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
            if depth > MAX_DEPTH {
                return Err(self.expected("less nesting"));
            }
            match self.peek() {
                Some(b'{') => self.object(depth),
                Some(b'[') => self.array(depth),
                Some(b'-' | b'0'..=b'9') => Ok(self.number()),
                _ => Err(self.expected("an object, an array or a number")),
            }
        }

        fn object(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
            self.eat(b'{', "{")?;
            let mut fields = Vec::new();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(Value::Object(fields));
            }
            loop {
                let key = self.key()?;
                self.eat(b':', ":")?;
                fields.push((key, self.value(depth + 1)?));
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        return Ok(Value::Object(fields));
                    }
                    _ => return Err(self.expected(", or }")),
                }
            }
        }

        fn array(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
            self.eat(b'[', "[")?;
            let mut items = Vec::new();
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value(depth + 1)?);
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b']') => {
                        self.at += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return Err(self.expected(", or ]")),
                }
            }
        }

        /// A key: a string without escapes (the client's keys are plain ASCII names).
        fn key(&mut self) -> Result<&'a str, ParseError> {
            self.eat(b'"', "a quoted key")?;
            let rest = &self.text[self.at..];
            match rest.find(['"', '\\']) {
                Some(end) if rest.as_bytes()[end] == b'"' => {
                    self.at += end + 1;
                    Ok(&rest[..end])
                }
                _ => Err(self.expected("a key without escapes")),
            }
        }

        /// A number's text: sign, digits, fraction, exponent; checked when it is read as one.
        fn number(&mut self) -> Value<'a> {
            let rest = &self.text[self.at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
                .unwrap_or(rest.len());
            self.at += end;
            Value::Number(&rest[..end])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spread over many orders of magnitude (a 64-bit LCG, then a random
    /// number of its bits), as latencies from microseconds to hours would be.
    fn spread_values(count: usize, seed: u64) -> Vec<u64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let bits = (state >> 58) as u32 % 40; // 0..40 bits: up to about 10^12
                (state >> 20) & ((1u64 << bits) - 1)
            })
            .collect()
    }

    fn histogram_of(values: &[u64]) -> Histogram {
        let mut histogram = Histogram::new();
        for &value in values {
            histogram.record(value);
        }
        histogram
    }

    #[test]
    fn every_bucket_holds_the_values_between_its_bounds() {
        for bucket in 0..BUCKET_COUNT {
            let (lowest, highest) = (lowest_in(bucket), highest_in(bucket));
            assert_eq!(bucket_of(lowest), bucket);
            assert_eq!(bucket_of(highest), bucket);
            if bucket + 1 < BUCKET_COUNT {
                assert_eq!(lowest_in(bucket + 1), highest + 1, "no gap after {bucket}");
            }
            // The stated error bound: a bucket is at most 1/128 of its lowest value wide.
            assert!(
                (highest - lowest) as f64 <= lowest as f64 * RELATIVE_ERROR,
                "bucket {bucket}: {lowest}..={highest}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKET_COUNT - 1);
        assert_eq!(highest_in(BUCKET_COUNT - 1), u64::MAX);
        assert_eq!(bucket_of(255), 255, "below 256 every value is exact");
    }

    #[test]
    fn percentiles_from_the_histogram_are_within_the_stated_error_of_the_exact_ones() {
        for seed in 1..=20 {
            let mut values = spread_values(5_000, seed);
            let histogram = histogram_of(&values);
            values.sort_unstable();
            for percent in 0..=100 {
                let exact = exact_percentile(&values, percent);
                let read = histogram.percentile(percent);
                assert!(
                    read >= exact && (read - exact) as f64 <= exact as f64 * RELATIVE_ERROR,
                    "seed {seed}, p{percent}: exact {exact}, from the histogram {read}"
                );
            }
        }
    }

    #[test]
    fn merging_two_histograms_gives_the_histogram_of_all_the_values() {
        let first = spread_values(3_000, 7);
        let second = spread_values(4_000, 8);
        let mut merged = histogram_of(&first);
        merged.merge(&histogram_of(&second));
        let all: Vec<u64> = first.iter().chain(&second).copied().collect();
        assert_eq!(merged, histogram_of(&all));
        assert_eq!(merged.count(), 7_000);
        // Merging is adding: the order does not matter, nor does an empty histogram.
        let mut other_way = histogram_of(&second);
        other_way.merge(&histogram_of(&first));
        other_way.merge(&Histogram::new());
        assert_eq!(other_way, merged);
    }

    #[test]
    fn an_empty_histogram_reads_zero_and_small_values_are_exact() {
        assert_eq!(Histogram::new().percentile(50), 0);
        let histogram = histogram_of(&[0, 7, 200]);
        assert_eq!(histogram.percentile(0), 0);
        assert_eq!(histogram.percentile(50), 7);
        assert_eq!(histogram.percentile(100), 200);
        assert_eq!(
            histogram.buckets().collect::<Vec<_>>(),
            [(0, 1), (7, 1), (200, 1)]
        );
    }

    #[test]
    fn exact_percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(exact_percentile(&values, 50), 50);
        assert_eq!(exact_percentile(&values, 99), 99);
        assert_eq!(exact_percentile(&values, 100), 100);
        assert_eq!(exact_percentile(&values, 0), 1);
        assert_eq!(exact_percentile(&[7], 99), 7);
        assert_eq!(exact_percentile(&[], 50), 0);
    }

    fn example() -> Summary {
        let counts = Counts {
            requests: 3,
            replies: 2,
            failed: 1,
            retried: 1,
            dropped_replies: 0,
        };
        Summary::of_run(counts, &mut [300, 100], 0.5)
    }

    #[test]
    fn the_line_has_exactly_the_documented_fields() {
        assert_eq!(
            example().line(),
            "requests=3 replies=2 failed=1 retried=1 seconds=0.500 req_per_s=4 p50_us=100 p99_us=300"
        );
    }

    #[test]
    fn per_broker_counts_appear_with_several_brokers_read_back_and_merge() {
        let mut two = example();
        two.per_broker = vec![2, 0];
        assert!(
            two.line().ends_with(" p99_us=300 per_broker=2,0"),
            "{}",
            two.line()
        );
        let json = two.to_json();
        assert!(
            json.ends_with("\"buckets\":[[100,1],[300,1]]},\"per_broker\":[2,0]}"),
            "{json}"
        );
        let read = Summary::from_json(&json).unwrap();
        assert_eq!(read.per_broker, [2, 0]);
        let mut three = example();
        three.per_broker = vec![1, 1, 5];
        let mut merged = read;
        merged.merge(&three);
        assert_eq!(merged.per_broker, [3, 1, 5]);
        assert_eq!(
            Summary::from_json(&example().to_json()).unwrap().per_broker,
            Vec::<u64>::new()
        );
    }

    #[test]
    fn the_json_has_the_same_figures_and_the_histogram() {
        assert_eq!(
            example().to_json(),
            "{\"requests\":3,\"replies\":2,\"failed\":1,\"retried\":1,\"dropped_replies\":0,\
             \"seconds\":0.500,\"req_per_s\":4,\"p50_us\":100,\"p99_us\":300,\
             \"latency_us\":{\"precision_bits\":8,\"relative_error\":0.0078125,\"count\":2,\
             \"buckets\":[[100,1],[300,1]]}}"
        );
    }

    #[test]
    fn the_json_reads_back_as_it_was_written() {
        let mut latencies = spread_values(1_000, 3);
        let counts = Counts {
            requests: 1_005,
            replies: 1_000,
            failed: 5,
            retried: 9,
            dropped_replies: 2,
        };
        let summary = Summary::of_run(counts, &mut latencies, 12.25);
        assert_eq!(Summary::from_json(&summary.to_json()), Ok(summary));
    }

    #[test]
    fn a_merged_summary_adds_counts_and_reads_percentiles_from_all_the_requests() {
        let mut fast: Vec<u64> = (1..=100).collect();
        let mut slow: Vec<u64> = (1..=100).map(|n| 10_000 + n * 100).collect();
        let counts = Counts {
            requests: 100,
            replies: 100,
            ..Counts::default()
        };
        let mut merged = Summary::of_run(counts, &mut fast, 1.0);
        merged.merge(&Summary::of_run(counts, &mut slow, 2.0));
        assert_eq!(
            (merged.requests, merged.replies, merged.seconds),
            (200, 200, 2.0)
        );
        // Of all 200 requests the median is the slowest fast one, 100; the median of the two
        // medians would have been about 5,000.
        assert_eq!(merged.p50_us, 100);
        let exact_p99 = 10_000 + 98 * 100;
        assert!(merged.p99_us >= exact_p99);
        assert!((merged.p99_us - exact_p99) as f64 <= exact_p99 as f64 * RELATIVE_ERROR);
        // What a merge prints reads back and merges on.
        assert_eq!(Summary::from_json(&merged.to_json()), Ok(merged));
    }

    #[test]
    fn what_is_not_a_summary_is_refused_with_a_reason() {
        assert!(matches!(
            Summary::from_json("requests=3 replies=2"),
            Err(ParseError::Syntax { at: 0, .. })
        ));
        assert_eq!(
            Summary::from_json("{\"requests\":3}"),
            Err(ParseError::Missing("latency_us"))
        );
        let other_precision = example()
            .to_json()
            .replace("\"precision_bits\":8", "\"precision_bits\":7");
        assert_eq!(
            Summary::from_json(&other_precision),
            Err(ParseError::Precision(7))
        );
        let text_value = example()
            .to_json()
            .replace("\"failed\":1", "\"failed\":\"1\"");
        assert!(matches!(
            Summary::from_json(&text_value),
            Err(ParseError::Syntax { .. })
        ));
        let negative = example().to_json().replace("\"failed\":1", "\"failed\":-1");
        assert_eq!(
            Summary::from_json(&negative),
            Err(ParseError::Field("failed", "a whole number"))
        );
        let deep = "[".repeat(100);
        assert!(matches!(
            Summary::from_json(&deep),
            Err(ParseError::Syntax { .. })
        ));
        assert!(matches!(
            Summary::from_json(&format!("{} {{}}", example().to_json())),
            Err(ParseError::Syntax { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let later =
            example()
                .to_json()
                .replacen('{', "{\"from_a_later_client\":[1,{\"x\":2.5e3}],", 1);
        assert_eq!(Summary::from_json(&later), Ok(example()));
    }
}
