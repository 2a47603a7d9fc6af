//! `GET /client/task` for lists longer than `LIST_PAGE` live tasks: the
//! worker reads the list from the state thread a page at a time while it
//! writes the body, so no turn of the state thread builds more than a page
//! of entries (other events go in between) and only one page of entries is
//! held at once. Each live task is listed once, as it was when its page was
//! read; a task created or removed meanwhile may be listed or not.
//!
//! The first page is read before the answer starts, so a busy state thread
//! is still a 503. A later page that cannot be read ends the body early; it
//! is then not valid JSON, and the worker logs why.

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::scheduler::model::TaskId;

/// Live tasks examined per page (and so listed per page at most).
pub(super) const LIST_PAGE: usize = 10_000;

/// Bytes of entries copied into one chunk of the body before it is handed
/// to the connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// A page: its entries (the state's `Arc<ListedTask>`s, written out by
/// `dto::append_task_entry` as the chunks are filled), and where the next
/// page starts (`None`: the list ended with this page).
pub(super) type Fetched<E> = (Vec<E>, Option<TaskId>);

/// Reads the next page after the given task, with at most this many
/// entries (what is left of `?limit=`).
pub(super) type Fetch<E> =
    Box<dyn FnMut(Option<TaskId>, Option<usize>) -> Result<Fetched<E>, String> + Send>;

/// Appends an entry's JSON to a chunk.
pub(super) type Render<E> = fn(&E, &mut Vec<u8>);

/// `[entry,entry,...]` and a newline, read a page at a time.
pub(super) struct PagedList<E> {
    fetch: Fetch<E>,
    render: Render<E>,
    /// Where the next page starts; `None` once the last page was read.
    next: Option<TaskId>,
    /// Entries still to list after the pages read so far (`?limit=`).
    left: Option<usize>,
    entries: VecDeque<E>,
    chunk: Vec<u8>,
    offset: usize,
    opened: bool,
    listed_any: bool,
    closed: bool,
}

impl<E> PagedList<E> {
    /// The list whose first page is `first`, read on with `fetch`, each
    /// entry written with `render`.
    pub(super) fn new(
        first: Fetched<E>,
        limit: Option<usize>,
        fetch: Fetch<E>,
        render: Render<E>,
    ) -> PagedList<E> {
        let (entries, next) = first;
        PagedList {
            fetch,
            render,
            next,
            left: limit.map(|limit| limit.saturating_sub(entries.len())),
            entries: entries.into(),
            chunk: Vec::new(),
            offset: 0,
            opened: false,
            listed_any: false,
            closed: false,
        }
    }

    /// Fills `chunk` with what comes next; false at the end of the body.
    fn refill(&mut self) -> io::Result<bool> {
        self.chunk.clear();
        self.offset = 0;
        if !self.opened {
            self.opened = true;
            self.chunk.push(b'[');
        }
        while self.chunk.len() < CHUNK_BYTES {
            if let Some(entry) = self.entries.pop_front() {
                if self.listed_any {
                    self.chunk.push(b',');
                }
                self.listed_any = true;
                (self.render)(&entry, &mut self.chunk);
                continue;
            }
            if self.next.is_some() && self.left != Some(0) {
                if !self.chunk.is_empty() {
                    // Hand out what is ready before waiting for the state.
                    break;
                }
                let (entries, next) = (self.fetch)(self.next.take(), self.left)
                    .map_err(|why| io::Error::other(format!("task list page: {why}")))?;
                self.left = self.left.map(|left| left.saturating_sub(entries.len()));
                self.entries = entries.into();
                self.next = next;
                continue;
            }
            if !self.closed {
                self.closed = true;
                self.chunk.extend_from_slice(b"]\n");
            }
            break;
        }
        Ok(!self.chunk.is_empty())
    }
}

impl<E> std::fmt::Debug for PagedList<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedList")
            .field("next", &self.next)
            .field("left", &self.left)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl<E> Read for PagedList<E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset == self.chunk.len() && !self.refill()? {
            return Ok(0);
        }
        let n = (self.chunk.len() - self.offset).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test entries: their JSON text.
    fn text(entry: &String, out: &mut Vec<u8>) {
        out.extend_from_slice(entry.as_bytes());
    }

    /// A list of `total` entries `e0`, `e1`, ... served `page` at a time,
    /// each page cut to what the limit leaves; the body read in 7-byte reads.
    fn read_paged(total: usize, page: usize, limit: Option<usize>) -> Result<String, String> {
        let entry = |n: usize| format!("\"e{n}\"");
        let serve =
            move |after: Option<TaskId>, left: Option<usize>| -> Result<Fetched<String>, String> {
                let from = after.map_or(0, |id| id.0.parse::<usize>().unwrap_or(0) + 1);
                let to = (from + page)
                    .min(total)
                    .min(from.saturating_add(left.unwrap_or(usize::MAX)));
                let next = (to < total).then(|| TaskId((to - 1).to_string().into()));
                Ok(((from..to).map(entry).collect(), next))
            };
        let mut fetch: Fetch<String> = Box::new(serve);
        let first = fetch(None, limit)?;
        let mut list = PagedList::new(first, limit, fetch, text);
        let mut body = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match list.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(error) => return Err(error.to_string()),
            }
        }
        String::from_utf8(body).map_err(|e| e.to_string())
    }

    #[test]
    fn pages_read_on_make_one_array() {
        let check = |total: usize, page: usize, limit: Option<usize>, expected: &str| {
            assert_eq!(
                read_paged(total, page, limit).as_deref(),
                Ok(expected),
                "{total} entries, pages of {page}, limit {limit:?}"
            );
        };
        check(0, 2, None, "[]\n");
        check(1, 2, None, "[\"e0\"]\n");
        check(2, 2, None, "[\"e0\",\"e1\"]\n");
        check(5, 2, None, "[\"e0\",\"e1\",\"e2\",\"e3\",\"e4\"]\n");
        check(5, 1, None, "[\"e0\",\"e1\",\"e2\",\"e3\",\"e4\"]\n");
        check(5, 2, Some(3), "[\"e0\",\"e1\",\"e2\"]\n");
        check(5, 2, Some(4), "[\"e0\",\"e1\",\"e2\",\"e3\"]\n");
        check(5, 9, Some(9), "[\"e0\",\"e1\",\"e2\",\"e3\",\"e4\"]\n");
    }

    #[test]
    fn a_page_that_cannot_be_read_is_an_error() {
        let fetch: Fetch<String> = Box::new(|_, _| Err("the state thread is gone".to_string()));
        let first = (vec!["\"e0\"".to_string()], Some(TaskId("0".into())));
        let mut list = PagedList::new(first, None, fetch, text);
        let mut body = String::new();
        let error = list
            .read_to_string(&mut body)
            .expect_err("second page fails");
        assert!(
            error.to_string().contains("the state thread is gone"),
            "{error}"
        );
    }
}
