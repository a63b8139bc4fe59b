//! weft for Python: the extension module `weft._weft`, wrapped by the
//! package in `python/weft` (which adds the `claim` context manager and is
//! what users import). Built and installed by maturin:
//! `pip install ./crates/weft-py` (docs/bindings.md).
//!
//! **Messages in place.** A poll callback gets each message as a read-only
//! `View` of the ring itself, a buffer-protocol object (`memoryview(v)`,
//! `numpy.frombuffer(v)`, `bytes(v)`): no copy. It is valid until the
//! callback returns; a memoryview or array of it still alive then makes the
//! poll raise `weft.Error`, since the ring's bytes may be overwritten after
//! it. Copy what you keep (`bytes(v)`).
//!
//! **Batches.** `Subscription.poll_into` copies up to N messages into rows
//! of a caller-owned buffer (a NumPy `uint8` array of shape (N, W), or any
//! writable buffer) and their lengths into a `uint32` buffer: one call and
//! no Python object per message.
//!
//! **Errors.** Set-up failures and faults raise `weft.Error` whose first
//! argument is the code's name (`"WEFT_ERR_URI"` ..., as in the C ABI) and
//! second the message. Back-pressure is not an exception: `offer` returns
//! False and nothing was written.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use weft::{Event, LossUnit, PublishError, SubscribeError};

pyo3::create_exception!(
    _weft,
    Error,
    PyException,
    "A weft call failed: args[0] is the code's name (as in the C ABI), args[1] the message."
);

fn err(code: &str, msg: impl std::fmt::Display) -> PyErr {
    Error::new_err((code.to_string(), msg.to_string()))
}

fn weft_err(e: weft::Error) -> PyErr {
    let code = match &e {
        weft::Error::Uri(_) => "WEFT_ERR_URI",
        weft::Error::Config(_) => "WEFT_ERR_CONFIG",
        weft::Error::Shm(_) => "WEFT_ERR_SHM",
        weft::Error::Net(_) => "WEFT_ERR_NET",
        weft::Error::Agent(_) => "WEFT_ERR_AGENT",
        weft::Error::Undelivered(_) => "WEFT_ERR_UNDELIVERED",
    };
    err(code, e)
}

fn closed(what: &str) -> PyErr {
    err("WEFT_ERR_CLOSED", format!("this {what} is closed"))
}

/// A node: the process's agents, counters and channel resources. `config`
/// is the TOML of docs/config.md (None: the defaults); the `WEFT_*`
/// environment variables override it. A context manager: leaving the block
/// closes it.
#[pyclass(unsendable, module = "weft")]
struct Node {
    node: Option<weft::Node>,
}

#[pymethods]
impl Node {
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(config: Option<&str>) -> PyResult<Self> {
        let cfg = match config {
            None => weft::NodeConfig::default(),
            Some(text) => weft::NodeConfig::from_toml(text)
                .map_err(|e| err("WEFT_ERR_CONFIG", format!("node configuration: {e}")))?,
        };
        let cfg = cfg
            .with_env()
            .map_err(|e| err("WEFT_ERR_CONFIG", format!("node configuration: {e}")))?;
        Ok(Self {
            node: Some(weft::Node::new(cfg).map_err(weft_err)?),
        })
    }

    /// Opens a publication on `uri` (`shm:NAME`, `udp://GROUP:PORT?...`).
    fn publication(&mut self, uri: &str, stream: u32) -> PyResult<Publication> {
        let node = self.node.as_mut().ok_or_else(|| closed("node"))?;
        let publ = node.publication(uri, stream).map_err(weft_err)?;
        Ok(Publication {
            claim: None,
            view: None,
            publ: Some(Box::new(publ)),
        })
    }

    /// Opens a subscription on `uri`; a shared-memory one may come before
    /// its publisher.
    fn subscription(&mut self, uri: &str, stream: u32) -> PyResult<Subscription> {
        let node = self.node.as_mut().ok_or_else(|| closed("node"))?;
        let sub = node.subscription(uri, stream).map_err(weft_err)?;
        Ok(Subscription { sub: Some(sub) })
    }

    /// One round of the node's work on this thread (threading = "invoker");
    /// returns how much work it did.
    fn do_work(&mut self) -> PyResult<usize> {
        Ok(self.node.as_mut().ok_or_else(|| closed("node"))?.do_work())
    }

    /// Flushes what the publications sent, stops the agents; raises
    /// `WEFT_ERR_UNDELIVERED` naming what was not delivered in time. Closing
    /// twice does nothing.
    fn close(&mut self) -> PyResult<()> {
        match self.node.take() {
            Some(n) => n.close().map_err(weft_err),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }
}

/// Bytes in place in a ring, lent to Python for one callback (a message) or
/// one claim: a buffer (`bytes(v)`, `memoryview(v)`, `numpy.frombuffer(v)`),
/// valid until the callback returns or the claim ends. After that every
/// access raises `BufferError`; a `memoryview` or array of it still alive
/// then makes weft raise `weft.Error` (its bytes may be overwritten).
#[pyclass(unsendable, module = "weft")]
struct View {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    valid: std::cell::Cell<bool>,
    /// Buffers handed out and not yet released.
    exports: std::cell::Cell<usize>,
}

impl View {
    /// Ends the lending; an error if a buffer of it is still held.
    fn end(&self) -> PyResult<()> {
        self.valid.set(false);
        match self.exports.get() {
            0 => Ok(()),
            n => Err(err(
                "WEFT_ERR_INVALID",
                format!("{n} view(s) of weft's bytes are still alive after the callback or claim: copy them (bytes(v)) to keep them"),
            )),
        }
    }
}

#[pymethods]
impl View {
    /// The buffer protocol: read-only for a message, writable for a claim.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::ffi::c_int,
    ) -> PyResult<()> {
        let me = slf.borrow();
        if !me.valid.get() {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "weft: these bytes were lent for a callback or claim that has ended",
            ));
        }
        // SAFETY: `view` is the caller's Py_buffer to fill; `ptr..ptr+len` is
        // valid (and writable if `writable`) while `valid` holds, which
        // `end` clears before the memory can be reused; FillInfo refuses a
        // writable request on read-only bytes.
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                me.ptr as *mut std::ffi::c_void,
                me.len as pyo3::ffi::Py_ssize_t,
                std::ffi::c_int::from(!me.writable),
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        me.exports.set(me.exports.get() + 1);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {
        self.exports.set(self.exports.get().saturating_sub(1));
    }

    fn __len__(&self) -> usize {
        self.len
    }
}

fn lend(py: Python<'_>, ptr: *mut u8, len: usize, writable: bool) -> PyResult<Py<View>> {
    Py::new(
        py,
        View {
            ptr,
            len,
            writable,
            valid: std::cell::Cell::new(true),
            exports: std::cell::Cell::new(0),
        },
    )
}

/// The sending end of a channel.
#[pyclass(unsendable, module = "weft")]
struct Publication {
    /// The open claim: it borrows `*publ` (boxed, so it stays put); declared
    /// first so it is dropped first.
    claim: Option<weft::Claim<'static>>,
    /// The writable view handed out for the claim.
    view: Option<Py<View>>,
    publ: Option<Box<weft::Publication>>,
}

impl Publication {
    fn publication(&mut self) -> PyResult<&mut weft::Publication> {
        if self.claim.is_some() {
            return Err(err(
                "WEFT_ERR_INVALID",
                "a claim is open on this publication: commit or abort it first",
            ));
        }
        self.publ
            .as_deref_mut()
            .ok_or_else(|| closed("publication"))
    }

    /// Ends the claim's view; an error if the caller kept a buffer of it.
    fn release_view(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.view.take() {
            Some(v) => v.borrow(py).end(),
            None => Ok(()),
        }
    }
}

fn flow(e: PublishError) -> PyResult<bool> {
    match e {
        PublishError::BackPressured | PublishError::NotConnected => Ok(false),
        PublishError::Closed => Err(err("WEFT_ERR_CLOSED", e)),
        PublishError::TooLarge { .. } => Err(err("WEFT_ERR_TOO_LARGE", e)),
    }
}

/// A contiguous byte buffer's address and length (bytes, bytearray,
/// memoryview, a NumPy array ...).
fn bytes_of(buf: &PyBuffer<u8>) -> PyResult<(*const u8, usize)> {
    if !buf.is_c_contiguous() {
        return Err(err("WEFT_ERR_INVALID", "the buffer is not contiguous"));
    }
    Ok((buf.buf_ptr() as *const u8, buf.len_bytes()))
}

#[pymethods]
impl Publication {
    /// Copies `data` (any bytes-like object) in as one message. True if it
    /// was sent; False if the subscribers are a full buffer behind or none
    /// is there yet (nothing written: try again). Raises for a message that
    /// is too large or a closed channel.
    fn offer(&mut self, data: PyBuffer<u8>) -> PyResult<bool> {
        let (ptr, len) = bytes_of(&data)?;
        // SAFETY: the buffer is contiguous, `len` bytes at `ptr`, and held
        // (so neither freed nor resized) until `data` drops after the call.
        let msg = unsafe { std::slice::from_raw_parts(ptr, len) };
        match self.publication()?.offer(msg) {
            Ok(()) => Ok(true),
            Err(e) => flow(e),
        }
    }

    /// Claims room for `length` bytes and returns a writable `View` of
    /// them, in place in the ring; None when back-pressured or not
    /// connected. Then `commit()` or `abort()`; `weft.claim(pub, n)` does
    /// that for you in a `with` block.
    fn try_claim(&mut self, py: Python<'_>, length: usize) -> PyResult<Option<Py<View>>> {
        let p = self.publication()?;
        // SAFETY: the claim borrows the boxed publication, which stays put
        // and is not touched until the claim is committed, aborted or
        // dropped (`publication()` refuses while one is open, and the claim
        // field drops before the box).
        let p: &'static mut weft::Publication = unsafe { &mut *(p as *mut weft::Publication) };
        match p.try_claim(length) {
            Ok(mut claim) => {
                let bytes = claim.payload_mut();
                let view = lend(py, bytes.as_mut_ptr(), bytes.len(), true)?;
                self.claim = Some(claim);
                self.view = Some(view.clone_ref(py));
                Ok(Some(view))
            }
            Err(e) => flow(e).map(|_| None),
        }
    }

    /// Publishes the open claim.
    fn commit(&mut self, py: Python<'_>) -> PyResult<()> {
        let claim = self
            .claim
            .take()
            .ok_or_else(|| err("WEFT_ERR_INVALID", "no claim is open"))?;
        let released = self.release_view(py);
        claim.commit();
        released
    }

    /// Drops the open claim: subscribers never see it.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        let claim = self
            .claim
            .take()
            .ok_or_else(|| err("WEFT_ERR_INVALID", "no claim is open"))?;
        let released = self.release_view(py);
        drop(claim);
        released
    }

    /// The largest message this publication takes, in bytes.
    #[getter]
    fn max_message(&mut self) -> PyResult<usize> {
        Ok(self.publication()?.max_message())
    }

    /// Whether a subscriber is there.
    #[getter]
    fn is_connected(&mut self) -> PyResult<bool> {
        Ok(self.publication()?.is_connected())
    }

    /// Closes the publication (abandoning an open claim).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        drop(self.claim.take());
        let released = self.release_view(py);
        self.publ = None;
        released
    }
}

/// Messages `from_..to` (in `unit`s: "datagrams" or "ring-bytes") of
/// `session_id` that will never arrive.
#[pyclass(frozen, get_all, module = "weft")]
struct Loss {
    session_id: u64,
    from_: u64,
    to: u64,
    unit: &'static str,
}

#[pymethods]
impl Loss {
    fn __repr__(&self) -> String {
        format!(
            "Loss(session_id={}, from_={}, to={}, unit={:?})",
            self.session_id, self.from_, self.to, self.unit
        )
    }
}

/// A publisher session started.
#[pyclass(frozen, get_all, module = "weft")]
struct NewSession {
    session_id: u64,
}

#[pymethods]
impl NewSession {
    fn __repr__(&self) -> String {
        format!("NewSession(session_id={})", self.session_id)
    }
}

/// The session's publisher closed or went silent.
#[pyclass(frozen, get_all, module = "weft")]
struct PublisherGone {
    session_id: u64,
}

#[pymethods]
impl PublisherGone {
    fn __repr__(&self) -> String {
        format!("PublisherGone(session_id={})", self.session_id)
    }
}

/// An event other than a message, as a Python object.
fn other_event(py: Python<'_>, e: Event<'_>) -> PyResult<PyObject> {
    Ok(match e {
        Event::Message(_) => unreachable!("messages are handled by the caller"),
        Event::Loss {
            session_id,
            from,
            to,
            unit,
        } => Py::new(
            py,
            Loss {
                session_id,
                from_: from,
                to,
                unit: match unit {
                    LossUnit::Datagrams => "datagrams",
                    LossUnit::RingBytes => "ring-bytes",
                },
            },
        )?
        .into_any(),
        Event::NewSession { session_id } => Py::new(py, NewSession { session_id })?.into_any(),
        Event::PublisherGone { session_id } => {
            Py::new(py, PublisherGone { session_id })?.into_any()
        }
    })
}

fn subscribe_err(e: SubscribeError) -> PyErr {
    match e {
        e @ SubscribeError::Attach { .. } => err("WEFT_ERR_ATTACH", e),
        e @ SubscribeError::Corrupt { .. } => err("WEFT_ERR_CORRUPT", e),
    }
}

/// The receiving end of a channel.
#[pyclass(unsendable, module = "weft")]
struct Subscription {
    sub: Option<weft::Subscription>,
}

#[pymethods]
impl Subscription {
    /// Hands up to `limit` events, in order, to `callback`: a message as a
    /// read-only `View` of the ring (valid only during the call), other
    /// events as `Loss`, `NewSession` or `PublisherGone`. Returns how many.
    /// An exception from the callback stops the poll (the events already
    /// handed over are consumed) and propagates.
    #[pyo3(signature = (callback, limit = 64))]
    fn poll(
        &mut self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        limit: usize,
    ) -> PyResult<usize> {
        let sub = self.sub.as_mut().ok_or_else(|| closed("subscription"))?;
        let mut failed: Option<PyErr> = None;
        let n = sub
            .poll(limit, |e| {
                if failed.is_some() {
                    return;
                }
                let r = match e {
                    Event::Message(m) => message_call(py, callback, m),
                    other => other_event(py, other).and_then(|o| callback.call1((o,)).map(drop)),
                };
                if let Err(e) = r {
                    failed = Some(e);
                }
            })
            .map_err(subscribe_err)?;
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Copies up to `len(lengths)` messages into the rows of `out` (a
    /// writable buffer: a NumPy uint8 array of shape (N, W), or N*W bytes
    /// with `width=W`) and each one's length into `lengths` (a writable
    /// uint32 buffer, such as `numpy.zeros(N, numpy.uint32)`). A message
    /// longer than a row is cut to it, its full length still in `lengths`
    /// (so `lengths[i] > W` shows it). Events other than messages go to
    /// `on_event`. Returns how many messages were written. One call, no
    /// Python object per message.
    #[pyo3(signature = (out, lengths, on_event, width = None))]
    fn poll_into(
        &mut self,
        py: Python<'_>,
        out: PyBuffer<u8>,
        lengths: PyBuffer<u32>,
        on_event: &Bound<'_, PyAny>,
        width: Option<usize>,
    ) -> PyResult<usize> {
        if out.readonly() || lengths.readonly() {
            return Err(err("WEFT_ERR_INVALID", "out and lengths must be writable"));
        }
        if !out.is_c_contiguous() || !lengths.is_c_contiguous() {
            return Err(err(
                "WEFT_ERR_INVALID",
                "out and lengths must be contiguous",
            ));
        }
        let width = match (width, out.shape()) {
            (Some(w), _) => w,
            (None, [_, w]) => *w,
            _ => {
                return Err(err(
                    "WEFT_ERR_INVALID",
                    "give width= for a one-dimensional out buffer",
                ))
            }
        };
        let rows = lengths.item_count();
        if width == 0 || out.len_bytes() < rows * width {
            return Err(err(
                "WEFT_ERR_INVALID",
                format!(
                    "out holds {} bytes: fewer than {rows} rows of {width}",
                    out.len_bytes()
                ),
            ));
        }
        let sub = self.sub.as_mut().ok_or_else(|| closed("subscription"))?;
        let (base, lens) = (out.buf_ptr() as *mut u8, lengths.buf_ptr() as *mut u32);
        let mut written = 0usize;
        let mut failed: Option<PyErr> = None;
        // Every event counts against the limit, so at most `rows` messages.
        sub.poll(rows, |e| match e {
            Event::Message(m) => {
                let n = m.len().min(width);
                // SAFETY: `written < rows` (at most `rows` events), so the row
                // lies inside `out` (checked: rows * width bytes), and entry
                // `written` inside `lengths`; both buffers are writable,
                // contiguous and held for the call; the ring is not Python
                // memory, so they cannot overlap it.
                unsafe {
                    std::ptr::copy_nonoverlapping(m.as_ptr(), base.add(written * width), n);
                    *lens.add(written) = u32::try_from(m.len()).unwrap_or(u32::MAX);
                }
                written += 1;
            }
            other => {
                if failed.is_none() {
                    if let Err(e) =
                        other_event(py, other).and_then(|o| on_event.call1((o,)).map(drop))
                    {
                        failed = Some(e);
                    }
                }
            }
        })
        .map_err(subscribe_err)?;
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Whether a publisher is attached.
    #[getter]
    fn is_connected(&self) -> PyResult<bool> {
        Ok(self
            .sub
            .as_ref()
            .ok_or_else(|| closed("subscription"))?
            .is_connected())
    }

    /// Closes the subscription.
    fn close(&mut self) {
        self.sub = None;
    }
}

/// Calls `callback` with a read-only `View` of `m`, then ends it.
fn message_call(py: Python<'_>, callback: &Bound<'_, PyAny>, m: &[u8]) -> PyResult<()> {
    // The view only reads (it is not writable); `*mut` is the buffer
    // protocol's type.
    let view = lend(py, m.as_ptr() as *mut u8, m.len(), false)?;
    let called = callback.call1((view.clone_ref(py),));
    let ended = view.borrow(py).end();
    called?;
    ended
}

#[pymodule]
fn _weft(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_class::<Node>()?;
    m.add_class::<View>()?;
    m.add_class::<Publication>()?;
    m.add_class::<Subscription>()?;
    m.add_class::<Loss>()?;
    m.add_class::<NewSession>()?;
    m.add_class::<PublisherGone>()?;
    Ok(())
}
