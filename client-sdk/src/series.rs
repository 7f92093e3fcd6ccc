//! Columnar range reads: [`Client::query_series_all`] asks for `columnar` pages (up to
//! 100,000 points each, values in packed columns) and joins them into one [`Series`] per
//! metric. Against a server that predates columnar pages (it answers in `points`), the
//! points are turned into the same series here, so callers see one shape either way.

use starling_proto::series;

use crate::proto::{QueryRequest, QueryResponse, Series};
use crate::{Client, Error};

impl Client {
    /// Every point matching `request` as one series per metric (in metric order, each in
    /// time order), following page tokens from `request.page_token`. `request.page_size` 0
    /// asks for the largest columnar page (100,000 points).
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use starling_sdk::proto::QueryRequest;
    ///
    /// let request = QueryRequest {
    ///     device: "pump-7".into(),
    ///     metric: "bar".into(),
    ///     from_ms: 1_699_920_000_000,
    ///     to_ms: 1_700_006_400_000,
    ///     ..Default::default()
    /// };
    /// for s in client.query_series_all(request).await? {
    ///     let mean = s.numbers.iter().sum::<f64>() / s.numbers.len() as f64;
    ///     println!("{}: {} points, mean {mean}", s.metric, s.ts_ms.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn query_series_all(&self, mut request: QueryRequest) -> Result<Vec<Series>, Error> {
        request.columnar = true;
        if request.page_size == 0 {
            request.page_size = MAX_COLUMNAR_PAGE;
        }
        let mut all = Vec::new();
        loop {
            let page = self.query(request.clone()).await?;
            let next = page.next_page_token.clone();
            append_page(&mut all, page);
            if next.is_empty() || next == request.page_token {
                return Ok(all);
            }
            request.page_token = next;
        }
    }
}

/// The server's cap on a columnar page.
const MAX_COLUMNAR_PAGE: u32 = 100_000;

/// Appends one page's series (or, from an older server, its points) to `all`.
fn append_page(all: &mut Vec<Series>, page: QueryResponse) {
    if page.series.is_empty() {
        let mut rows = Vec::new();
        for p in page.points {
            series::push_point(&mut rows, &p.metric, p.ts_ms, p.value);
        }
        series::append_page(all, rows);
    } else {
        series::append_page(all, page.series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Point, Value, value::Kind};

    #[test]
    fn rows_from_an_older_server_and_columns_give_the_same_series() {
        let flag = |b| Value {
            kind: Some(Kind::Boolean(b)),
        };
        let num = |n| Value {
            kind: Some(Kind::Number(n)),
        };
        let points: Vec<Point> = [("a", 1, num(1.0)), ("a", 2, flag(true)), ("b", 1, num(2.0))]
            .into_iter()
            .map(|(metric, ts_ms, v)| Point {
                metric: metric.into(),
                ts_ms,
                value: Some(v),
                ..Default::default()
            })
            .collect();
        let (mut from_rows, mut from_columns) = (Vec::new(), Vec::new());
        for chunk in points.chunks(2) {
            append_page(
                &mut from_rows,
                QueryResponse {
                    points: chunk.to_vec(),
                    ..Default::default()
                },
            );
            let mut columns = Vec::new();
            for p in chunk {
                series::push_point(&mut columns, &p.metric, p.ts_ms, p.value.clone());
            }
            append_page(
                &mut from_columns,
                QueryResponse {
                    series: columns,
                    ..Default::default()
                },
            );
        }
        let metrics: Vec<_> = from_rows
            .iter()
            .map(|s| (s.metric.as_str(), s.ts_ms.len()))
            .collect();
        assert_eq!(metrics, [("a", 2), ("b", 1)]);
        assert_eq!(from_rows[0].other_at, [1]);
        assert_eq!(from_rows[0].others, [flag(true)]);
        // NaN != NaN, so compare the debug text (NaN prints alike).
        assert_eq!(format!("{from_rows:?}"), format!("{from_columns:?}"));
    }
}
