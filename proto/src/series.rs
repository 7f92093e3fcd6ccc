//! Building columnar [`Series`] (the node fills them from stored points, the SDK joins
//! pages and converts rows from older servers): one place defines the layout.

use crate::v1::{Series, Value, value::Kind};

impl Series {
    /// Appends one point: a number goes into `numbers`; any other value (or none) goes into
    /// `others`, its position into `other_at`, and NaN holds its place among the numbers.
    pub fn push(&mut self, ts_ms: i64, value: Option<Value>) {
        self.ts_ms.push(ts_ms);
        match value {
            Some(Value {
                kind: Some(Kind::Number(n)),
            }) => self.numbers.push(n),
            other => {
                self.other_at.push(self.numbers.len() as u32);
                self.numbers.push(f64::NAN);
                self.others.push(other.unwrap_or_default());
            }
        }
    }

    /// Appends `next`, the continuation of this series (same metric, later points).
    pub fn extend_with(&mut self, next: Series) {
        let offset = self.ts_ms.len() as u32;
        self.ts_ms.extend(next.ts_ms);
        self.numbers.extend(next.numbers);
        self.other_at
            .extend(next.other_at.into_iter().map(|i| i + offset));
        self.others.extend(next.others);
    }
}

/// Appends one point of `metric` to `all`, points coming in (metric, ts) order: a new series
/// opens when the metric changes.
pub fn push_point(all: &mut Vec<Series>, metric: &str, ts_ms: i64, value: Option<Value>) {
    if all.last().is_none_or(|s| s.metric != metric) {
        all.push(Series {
            metric: metric.to_owned(),
            ..Default::default()
        });
    }
    all.last_mut()
        .expect("a series was opened above")
        .push(ts_ms, value);
}

/// Appends one page's series to `all`: a first series that continues the last one (same
/// metric, cut by the page boundary) extends it.
pub fn append_page(all: &mut Vec<Series>, page: Vec<Series>) {
    for s in page {
        match all.last_mut() {
            Some(last) if last.metric == s.metric => last.extend_with(s),
            _ => all.push(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: f64) -> Option<Value> {
        Some(Value {
            kind: Some(Kind::Number(n)),
        })
    }

    fn flag(b: bool) -> Option<Value> {
        Some(Value {
            kind: Some(Kind::Boolean(b)),
        })
    }

    /// (metric, ts, numbers with NaN as None, other_at) of each series.
    type Shape = Vec<(String, Vec<i64>, Vec<Option<f64>>, Vec<u32>)>;

    fn shape(all: &[Series]) -> Shape {
        all.iter()
            .map(|s| {
                let numbers = s
                    .numbers
                    .iter()
                    .map(|n| (!n.is_nan()).then_some(*n))
                    .collect();
                (
                    s.metric.clone(),
                    s.ts_ms.clone(),
                    numbers,
                    s.other_at.clone(),
                )
            })
            .collect()
    }

    fn build(points: &[(&str, i64, Option<Value>)]) -> Vec<Series> {
        let mut all = Vec::new();
        for (metric, ts, value) in points {
            push_point(&mut all, metric, *ts, value.clone());
        }
        all
    }

    #[test]
    fn points_become_one_series_per_metric() {
        type Case = (Vec<(&'static str, i64, Option<Value>)>, Shape);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (
                vec![("a", 1, num(1.5)), ("a", 2, num(-2.0))],
                vec![("a".into(), vec![1, 2], vec![Some(1.5), Some(-2.0)], vec![])],
            ),
            (
                vec![
                    ("a", 1, num(1.0)),
                    ("b", 1, flag(true)),
                    ("b", 5, num(3.0)),
                    ("b", 7, None),
                ],
                vec![
                    ("a".into(), vec![1], vec![Some(1.0)], vec![]),
                    (
                        "b".into(),
                        vec![1, 5, 7],
                        vec![None, Some(3.0), None],
                        vec![0, 2],
                    ),
                ],
            ),
        ];
        for (points, want) in cases {
            let all = build(&points);
            assert_eq!(shape(&all), want, "{points:?}");
            let others: Vec<Value> = all.iter().flat_map(|s| s.others.clone()).collect();
            let expected: Vec<Value> = points
                .iter()
                .filter(|(_, _, v)| {
                    !matches!(
                        v,
                        Some(Value {
                            kind: Some(Kind::Number(_))
                        })
                    )
                })
                .map(|(_, _, v)| v.clone().unwrap_or_default())
                .collect();
            assert_eq!(others, expected);
        }
    }

    #[test]
    fn pages_cut_anywhere_join_into_the_same_series() {
        let points = vec![
            ("a", 1, num(1.0)),
            ("a", 2, flag(true)),
            ("b", 1, num(2.0)),
            ("b", 3, flag(false)),
        ];
        let whole = build(&points);
        for cut in 0..=points.len() {
            let mut all = Vec::new();
            append_page(&mut all, build(&points[..cut]));
            append_page(&mut all, build(&points[cut..]));
            assert_eq!(shape(&all), shape(&whole), "cut at {cut}");
            let others = |v: &[Series]| v.iter().flat_map(|s| s.others.clone()).collect::<Vec<_>>();
            assert_eq!(others(&all), others(&whole), "cut at {cut}");
        }
    }
}
