//! The evaluator: an expression at one instant, and a range query as the instant evaluation
//! at each step. Selectors read the store through a per-query cache (one read per selector for
//! the whole query window), then each step slices what it needs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use super::{Engine, QueryError, Value};
use crate::labels::{Labels, METRIC_NAME, MatchKind, Matcher};
use crate::storage::rollup::{Summaries, Summary};
use crate::storage::{Queryable, Series, is_stale};

/// Ranges at least this long are read from the store's rollups, where it keeps them.
pub(crate) const ROLLUP_RANGE_MS: i64 = 3_600_000;

/// A value while an expression is evaluated.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Scalar(f64),
    String(String),
    Vector(Vec<(Labels, f64)>),
    Matrix(Vec<Series>),
}

impl Val {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// Parses a query; a syntax error says where and what was expected, as Prometheus does.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    slipway_spec::promql::parse(query).map_err(|e| QueryError::bad_data(e.to_string()))
}

/// What a selector read: the window covered and the series.
struct Fetched {
    lo: i64,
    hi: i64,
    series: Rc<Vec<Series>>,
}

pub(crate) struct Evaluator<'a> {
    pub(crate) engine: &'a Engine,
    store: &'a dyn Queryable,
    /// The query's first and last evaluation time (`@ start()`, `@ end()`).
    pub(crate) start: i64,
    pub(crate) end: i64,
    cache: RefCell<HashMap<usize, Fetched>>,
    loaded: Cell<usize>,
    /// Each aggregation's group of each input series, so the steps of a range query (which
    /// see the same label sets) work it out once.
    groups: RefCell<HashMap<(usize, Labels), Labels>>,
    /// Where each selector's window starts and ends in each fetched series, from the last
    /// step: a range query's steps move forward, so the next window is found by reading on
    /// from there (a binary search per step and series misses the cache on every probe).
    cursors: RefCell<HashMap<usize, Cursors>>,
    /// Each long-range selector's summaries reader, over the window it covers.
    summaries: RefCell<HashMap<usize, Option<SummaryReader<'a>>>>,
}

struct SummaryReader<'a> {
    lo: i64,
    hi: i64,
    reader: Box<dyn Summaries + 'a>,
}

/// A range vector: each series' samples in its window, borrowed from what the selector read
/// where it can be.
pub(crate) struct Windows {
    data: Rc<Vec<Series>>,
    spans: Vec<Span>,
    owned: Vec<Series>,
}

enum Span {
    /// Series `i` of the data, samples `[from, to)`.
    Slice(usize, usize, usize),
    /// An owned series.
    Owned(usize),
}

impl Windows {
    /// Series computed rather than read (a subquery's).
    pub(crate) fn owned(series: Vec<Series>) -> Windows {
        Windows {
            data: Rc::new(Vec::new()),
            spans: (0..series.len()).map(Span::Owned).collect(),
            owned: series,
        }
    }

    /// Each series' labels and samples.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Labels, &[(i64, f64)])> {
        self.spans.iter().map(|span| match *span {
            Span::Slice(i, from, to) => (&self.data[i].labels, &self.data[i].samples[from..to]),
            Span::Owned(i) => (&self.owned[i].labels, self.owned[i].samples.as_slice()),
        })
    }

    /// Whether no series has a sample in its window.
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// As owned series.
    pub(crate) fn into_series(self) -> Vec<Series> {
        let mut owned: Vec<Option<Series>> = self.owned.into_iter().map(Some).collect();
        self.spans
            .iter()
            .filter_map(|span| match *span {
                Span::Slice(i, from, to) => Some(Series {
                    labels: self.data[i].labels.clone(),
                    samples: self.data[i].samples[from..to].to_vec(),
                }),
                Span::Owned(i) => owned[i].take(),
            })
            .collect()
    }
}

/// The windows of one selector: which fetch they index, and `[from, to)` per series.
struct Cursors {
    fetched: usize,
    at: Vec<(usize, usize)>,
}

/// The first index at or after which `before(ts)` is false, reading on from `hint` (found by
/// binary search when the answer lies behind `hint` or far ahead).
fn seek(samples: &[(i64, f64)], hint: usize, before: impl Fn(i64) -> bool) -> usize {
    let mut i = hint.min(samples.len());
    if i > 0 && !before(samples[i - 1].0) {
        return samples.partition_point(|(ts, _)| before(*ts));
    }
    let stop = (i + 32).min(samples.len());
    while i < stop {
        if !before(samples[i].0) {
            return i;
        }
        i += 1;
    }
    i + samples[i..].partition_point(|(ts, _)| before(*ts))
}

pub(crate) fn to_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => to_ms(*d),
        Some(Offset::Neg(d)) => -to_ms(*d),
    }
}

fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => to_ms(d),
        Err(e) => -to_ms(e.duration()),
    }
}

/// The matchers of a selector, the metric name included.
pub(crate) fn matchers_of(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = ms
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                kind: match &m.op {
                    MatchOp::Equal => MatchKind::Equal,
                    MatchOp::NotEqual => MatchKind::NotEqual,
                    MatchOp::Re(r) => MatchKind::Regex(r.clone()),
                    MatchOp::NotRe(r) => MatchKind::NotRegex(r.clone()),
                },
                value: m.value.clone(),
            })
            .collect();
        if let Some(name) = &vs.name
            && !out.iter().any(|m| m.name == METRIC_NAME)
        {
            out.push(Matcher::equal(METRIC_NAME, name));
        }
        out
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![convert(&vs.matchers.matchers)]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|group| convert(group))
            .collect()
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        engine: &'a Engine,
        store: &'a dyn Queryable,
        start: i64,
        end: i64,
        _step: i64,
    ) -> Self {
        Evaluator {
            engine,
            store,
            start,
            end,
            cache: RefCell::new(HashMap::new()),
            loaded: Cell::new(0),
            groups: RefCell::new(HashMap::new()),
            cursors: RefCell::new(HashMap::new()),
            summaries: RefCell::new(HashMap::new()),
        }
    }

    /// An instant query's result.
    pub(crate) fn top(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        Ok(match self.eval(expr, t)? {
            Val::Scalar(v) => Value::Scalar(v),
            Val::String(s) => Value::String(s),
            Val::Vector(v) => Value::Vector(v),
            Val::Matrix(m) => Value::Matrix(m),
        })
    }

    /// A range query's result: the expression at each step.
    pub(crate) fn range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let kind = static_kind(expr);
        if kind == "range vector" || kind == "string" {
            return Err(QueryError::bad_data(format!(
                "invalid expression type \"{kind}\" for range query, must be Scalar or instant Vector"
            )));
        }
        // Hashed (label sets hash once), sorted at the end.
        let mut out: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut t = start;
        while t <= end {
            match self.eval(expr, t)? {
                Val::Scalar(v) => out.entry(Labels::new()).or_default().push((t, v)),
                Val::Vector(v) => {
                    for (labels, value) in v {
                        out.entry(labels).or_default().push((t, value));
                    }
                }
                other => {
                    return Err(QueryError::bad_data(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.kind()
                    )));
                }
            }
            t += step;
        }
        let mut series: Vec<Series> = out
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect();
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    pub(crate) fn eval(&self, expr: &Expr, t: i64) -> Result<Val, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(v) => Ok(Val::Vector(
                    v.into_iter().map(|(l, x)| (l.without_name(), -x)).collect(),
                )),
                other => Err(QueryError::bad_data(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got \"{}\"",
                    other.kind()
                ))),
            },
            Expr::VectorSelector(vs) => self.instant_selector(vs, t).map(Val::Vector),
            Expr::MatrixSelector(ms) => self
                .range_selector(&ms.vs, to_ms(ms.range), t)
                .map(Val::Matrix),
            Expr::Subquery(sq) => self.subquery(sq, t).map(Val::Matrix),
            Expr::Call(call) => super::functions::call(self, call, t),
            Expr::Aggregate(agg) => super::aggregate::eval(self, agg, t),
            Expr::Binary(b) => super::binary::eval(self, b, t),
            Expr::Extension(_) => Err(QueryError::bad_data("unsupported expression")),
        }
    }

    /// The group of `labels` for the aggregation `node`, computed once per query.
    pub(crate) fn group(
        &self,
        node: usize,
        labels: &Labels,
        of: impl FnOnce(&Labels) -> Labels,
    ) -> Labels {
        let key = (node, labels.clone());
        if let Some(g) = self.groups.borrow().get(&key) {
            return g.clone();
        }
        let g = of(labels);
        self.groups.borrow_mut().insert(key, g.clone());
        g
    }

    /// The time a selector is read at: `@` pins it, `offset` moves it back.
    pub(crate) fn selector_time(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        t: i64,
    ) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_ms(st),
        };
        base - offset_ms(offset)
    }

    /// The series of a selector with their samples in `[lo, hi]`, read once per query for the
    /// whole window the query needs.
    fn fetch(&self, vs: &VectorSelector, lo: i64, hi: i64) -> Result<Rc<Vec<Series>>, QueryError> {
        let key = std::ptr::from_ref(vs) as usize;
        if let Some(f) = self.cache.borrow().get(&key)
            && f.lo <= lo
            && f.hi >= hi
        {
            return Ok(f.series.clone());
        }
        // Cover every step of the query at once (the steps move the window forward).
        let span = if vs.at.is_some() {
            0
        } else {
            self.end - self.start
        };
        let (lo, hi) = match self.cache.borrow().get(&key) {
            Some(f) => (lo.min(f.lo), (hi + span).max(f.hi)),
            None => (lo, hi + span),
        };
        let groups = matchers_of(vs);
        let mut series: Vec<Series> = Vec::new();
        if let [group] = groups.as_slice() {
            series = self.store.select(group, lo, hi);
        } else {
            // `or` of matcher sets (`{__name__=~"a|b"}` split, say): a series once.
            let mut seen = std::collections::HashSet::new();
            for group in &groups {
                for s in self.store.select(group, lo, hi) {
                    if seen.insert(s.labels.clone()) {
                        series.push(s);
                    }
                }
            }
        }
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        self.loaded.set(self.loaded.get() + n);
        if self.loaded.get() > self.engine.max_samples {
            return Err(QueryError::execution(
                "query processing would load too many samples into memory in query execution",
            ));
        }
        let series = Rc::new(series);
        self.cache.borrow_mut().insert(
            key,
            Fetched {
                lo,
                hi,
                series: series.clone(),
            },
        );
        Ok(series)
    }

    /// The summary of each series of a range selector at `t`, from the store's rollups: None
    /// when the range is short, the store keeps none, or the selector is an `or` of matcher
    /// sets (then the samples are read).
    pub(crate) fn summaries(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Option<Vec<(Labels, Summary)>> {
        if range < ROLLUP_RANGE_MS {
            return None;
        }
        let te = self.selector_time(&vs.at, &vs.offset, t);
        let lo = te - range;
        let key = std::ptr::from_ref(vs) as usize;
        let mut all = self.summaries.borrow_mut();
        let covered = match all.get(&key) {
            Some(None) => return None,
            Some(Some(r)) => r.lo <= lo && r.hi >= te,
            None => false,
        };
        if !covered {
            let groups = matchers_of(vs);
            let [group] = groups.as_slice() else {
                all.insert(key, None);
                return None;
            };
            let span = if vs.at.is_some() {
                0
            } else {
                self.end - self.start
            };
            let hi = te + span.max(0);
            let reader = self
                .store
                .summaries(group, lo, hi)
                .map(|reader| SummaryReader { lo, hi, reader });
            let none = reader.is_none();
            all.insert(key, reader);
            if none {
                return None;
            }
        }
        let r = all.get_mut(&key)?.as_mut()?;
        Some(r.reader.summarize(lo, te))
    }

    /// The cursors of selector `vs` into `data` (new ones when the data was fetched again).
    fn cursors_for<'c>(
        &self,
        cursors: &'c mut HashMap<usize, Cursors>,
        vs: &VectorSelector,
        data: &Rc<Vec<Series>>,
    ) -> &'c mut Cursors {
        let fetched = Rc::as_ptr(data) as usize;
        let c = cursors
            .entry(std::ptr::from_ref(vs) as usize)
            .or_insert_with(|| Cursors {
                fetched,
                at: Vec::new(),
            });
        if c.fetched != fetched || c.at.len() != data.len() {
            c.fetched = fetched;
            c.at = vec![(0, 0); data.len()];
        }
        c
    }

    /// An instant selector at `t`: each series' newest sample within the lookback, unless it
    /// is a stale marker.
    pub(crate) fn instant_selector(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(Labels, f64)>, QueryError> {
        let te = self.selector_time(&vs.at, &vs.offset, t);
        let lookback = to_ms(self.engine.lookback);
        // (te - lookback, te]: a sample exactly a lookback old is gone.
        let lo = te - lookback + 1;
        let data = self.fetch(vs, lo, te)?;
        let mut cursors = self.cursors.borrow_mut();
        let c = self.cursors_for(&mut cursors, vs, &data);
        let mut out = Vec::new();
        for (s, at) in data.iter().zip(c.at.iter_mut()) {
            let upto = seek(&s.samples, at.1, |ts| ts <= te);
            at.1 = upto;
            if upto == 0 {
                continue;
            }
            let (ts, v) = s.samples[upto - 1];
            if ts < lo || is_stale(v) {
                continue;
            }
            out.push((s.labels.clone(), v));
        }
        Ok(out)
    }

    /// A range selector at `t`: each series' samples in the range (stale markers left out).
    pub(crate) fn range_selector(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Vec<Series>, QueryError> {
        Ok(self.range_windows(vs, range, t)?.into_series())
    }

    /// [`Evaluator::range_selector`] without copying: each series' window in what the
    /// selector read (a window holding stale markers is copied without them).
    pub(crate) fn range_windows(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Windows, QueryError> {
        let te = self.selector_time(&vs.at, &vs.offset, t);
        // Prometheus 2: [te - range, te].
        let lo = te - range;
        let data = self.fetch(vs, lo, te)?;
        let mut cursors = self.cursors.borrow_mut();
        let c = self.cursors_for(&mut cursors, vs, &data);
        let mut spans = Vec::new();
        let mut owned = Vec::new();
        for (i, (s, at)) in data.iter().zip(c.at.iter_mut()).enumerate() {
            let from = seek(&s.samples, at.0, |ts| ts < lo);
            let to = from + seek(&s.samples[from..], at.1.saturating_sub(from), |ts| ts <= te);
            *at = (from, to);
            let window = &s.samples[from..to];
            if window.iter().any(|(_, v)| is_stale(*v)) {
                let samples: Vec<(i64, f64)> = window
                    .iter()
                    .filter(|(_, v)| !is_stale(*v))
                    .copied()
                    .collect();
                if !samples.is_empty() {
                    spans.push(Span::Owned(owned.len()));
                    owned.push(Series {
                        labels: s.labels.clone(),
                        samples,
                    });
                }
            } else if from < to {
                spans.push(Span::Slice(i, from, to));
            }
        }
        drop(cursors);
        Ok(Windows { data, spans, owned })
    }

    /// A subquery: the inner expression at each step of its range, the steps aligned to
    /// multiples of the step (as Prometheus aligns them).
    fn subquery(&self, sq: &parser::SubqueryExpr, t: i64) -> Result<Vec<Series>, QueryError> {
        let step = sq
            .step
            .map(to_ms)
            .unwrap_or_else(|| to_ms(self.engine.default_subquery_step))
            .max(1);
        let te = self.selector_time(&sq.at, &sq.offset, t);
        let from = te - to_ms(sq.range);
        // The first multiple of the step at or after the range's start.
        let mut first = from.div_euclid(step) * step;
        if first < from {
            first += step;
        }
        let inner = Evaluator::new(self.engine, self.store, first, te, step);
        inner.range(&sq.expr, first, te, step)
    }
}

/// The type an expression evaluates to, from its shape.
pub(crate) fn static_kind(expr: &Expr) -> &'static str {
    match expr {
        Expr::NumberLiteral(_) => "scalar",
        Expr::StringLiteral(_) => "string",
        Expr::Paren(p) => static_kind(&p.expr),
        Expr::Unary(u) => static_kind(&u.expr),
        Expr::VectorSelector(_) | Expr::Aggregate(_) => "instant vector",
        Expr::MatrixSelector(_) | Expr::Subquery(_) => "range vector",
        Expr::Call(c) => match c.func.return_type {
            parser::value::ValueType::Scalar => "scalar",
            parser::value::ValueType::String => "string",
            parser::value::ValueType::Matrix => "range vector",
            parser::value::ValueType::Vector => "instant vector",
        },
        Expr::Binary(b) => {
            if static_kind(&b.lhs) == "scalar" && static_kind(&b.rhs) == "scalar" {
                "scalar"
            } else {
                "instant vector"
            }
        }
        Expr::Extension(_) => "instant vector",
    }
}
