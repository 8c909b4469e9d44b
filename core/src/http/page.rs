//! Pages of a list (`?limit=N&before=CURSOR`): dead letters, recent
//! requests. Each page is read from its cursor down an index, so the
//! hundred-thousandth row costs what the first does; a page says the
//! cursor of the next (`next`, `null` on the last).

use axum::http::StatusCode;

use super::error::ApiError;

/// A page's size when none is asked for, and the largest one given.
pub(super) const DEFAULT_LIMIT: usize = 50;
pub(super) const MAX_LIMIT: usize = 500;

/// `limit=`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when not given.
pub(super) fn limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::http(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit={text:?}: give 1 to {MAX_LIMIT}"),
        )),
    }
}

/// `before=`: a sequence number, the `next` of a previous page; `what`
/// names it in the error.
pub(super) fn before(text: Option<&str>, what: &str) -> Result<Option<i64>, ApiError> {
    text.map(|text| {
        text.parse::<i64>().map_err(|_| {
            ApiError::http(
                StatusCode::BAD_REQUEST,
                "bad_before",
                format!("before={text:?}: give {what} (the `next` of a page)"),
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_read_or_refused() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("7")).unwrap(), 7);
        for wrong in ["0", "501", "-1", "ten"] {
            let e = limit(Some(wrong)).unwrap_err();
            assert_eq!(e.name, "bad_limit", "{wrong}");
        }
        assert_eq!(before(None, "x").unwrap(), None);
        assert_eq!(before(Some("42"), "x").unwrap(), Some(42));
        assert_eq!(before(Some("4x"), "x").unwrap_err().name, "bad_before");
    }
}
