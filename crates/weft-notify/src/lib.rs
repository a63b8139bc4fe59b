//! weft's notifications on Redis: each alert that starts firing, repeats or
//! resolves (from `weft-stat serve --rules`), and each scheduled report
//! (`weft-rebalance daily`), becomes an entry in a Redis Stream (durable, `MAXLEN`-bounded,
//! read by consumer groups that acknowledge, so a restarted consumer misses
//! nothing) and a pub/sub message for live watchers.
//!
//! Delivery is exactly once per dedup key (the alert's fingerprint, when it
//! started, its status and repeat): a Lua script sets `KEY:dedup:<key>`
//! with `NX` and only then adds the entry and publishes, atomically, so a
//! notification retried after a broken connection is not added twice.
//! While Redis is down (or restarting), notifications queue in order in
//! the sending process (up to [`QUEUE_MAX`]) and go out when it is back.
//!
//! Costs: one round trip to Redis per notification (a script call); the
//! queue holds them in memory while Redis is away.

use std::collections::{BTreeMap, VecDeque};

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A state change to tell the world about.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// "firing" or "resolved" (an alert), or "report" (a scheduled
    /// assessment, such as `weft-rebalance daily`'s).
    pub status: &'static str,
    /// What it is about: the rule's name, or the report's.
    pub alertname: String,
    /// "critical", "warning" or "info".
    pub severity: String,
    /// One line for people.
    pub summary: String,
    /// The alert's labels: the series', the rule's, alertname, severity.
    pub labels: BTreeMap<String, String>,
    /// The value that crossed the threshold (NaN: none).
    pub value: f64,
    /// FNV-1a of alertname and labels, hex: one alert, however often sent.
    pub fingerprint: String,
    /// The group it belongs to (`notify.group_by`'s labels).
    pub group: String,
    /// When it started firing (ns since the epoch) and, resolved, ended.
    pub starts_at_ns: u64,
    /// When it ended (resolved), else 0.
    pub ends_at_ns: u64,
    /// A repeat of a firing alert (after `repeat_interval`).
    pub repeat: u32,
}

impl Notification {
    /// The key that makes delivery idempotent: this alert, this firing,
    /// this status, this repeat.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.fingerprint, self.starts_at_ns, self.status, self.repeat
        )
    }

    /// As a JSON object (the pub/sub message, `watch`'s line).
    pub fn json(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        format!(
            "{{\"status\":\"{}\",\"alertname\":{},\"severity\":{},\"summary\":{},\"value\":{},\"fingerprint\":\"{}\",\"group\":{},\"starts_at_ns\":{},\"ends_at_ns\":{},\"repeat\":{},\"labels\":{{{}}}}}",
            self.status,
            json_str(&self.alertname),
            json_str(&self.severity),
            json_str(&self.summary),
            if self.value.is_finite() { self.value.to_string() } else { "null".into() },
            self.fingerprint,
            json_str(&self.group),
            self.starts_at_ns,
            self.ends_at_ns,
            self.repeat,
            labels.join(",")
        )
    }
}

/// FNV-1a (64-bit, hex) of a label set: the identity of one alert or
/// report, however often it is sent.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Notifications kept while Redis is unreachable; past this the oldest
/// are dropped, and counted.
pub const QUEUE_MAX: usize = 100_000;

/// The dedup keys live this long (a retry comes much sooner).
const DEDUP_TTL_S: u64 = 7 * 24 * 3600;

const SCRIPT: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5))
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return id
end
return false
";

/// Where notifications go.
#[derive(Clone, Debug)]
pub struct Target {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The stream's key (`weft:alerts` by default in the tools).
    pub stream: String,
    /// The pub/sub channel each entry is also published on.
    pub channel: String,
    /// The stream is trimmed to about this many entries (`MAXLEN ~`).
    pub maxlen: usize,
}

/// The command-line flags that name a [`Target`] (`--redis`,
/// `--redis-stream`, `--redis-channel`, `--redis-maxlen`), the same in
/// every tool that notifies or reads notifications.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis to send notifications to or read them from, e.g.
    /// redis://127.0.0.1:6379.
    #[arg(long)]
    pub redis: Option<String>,
    /// The stream notifications are added to.
    #[arg(long, default_value = "weft:alerts")]
    pub redis_stream: String,
    /// The pub/sub channel each notification is also published on.
    #[arg(long, default_value = "weft:alerts")]
    pub redis_channel: String,
    /// The stream's approximate bound (MAXLEN ~).
    #[arg(long, default_value_t = 10_000)]
    pub redis_maxlen: usize,
}

impl RedisArgs {
    /// The target, if `--redis` was given.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            url: self.redis.clone()?,
            stream: self.redis_stream.clone(),
            channel: self.redis_channel.clone(),
            maxlen: self.redis_maxlen,
        })
    }
}

/// The queue and the connection.
pub struct Notifier {
    target: Target,
    conn: Option<redis::Connection>,
    queue: VecDeque<Notification>,
    script: redis::Script,
    /// Entries added.
    pub sent: u64,
    /// Retries Redis already had (their dedup key was set).
    pub duplicates: u64,
    /// Dropped from a full queue.
    pub dropped: u64,
    /// The last delivery error, said once per outage.
    pub down_since: Option<String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("target", &self.target)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Notifier {
    /// A notifier with an empty queue; it connects on the first flush.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            conn: None,
            queue: VecDeque::new(),
            script: redis::Script::new(SCRIPT),
            sent: 0,
            duplicates: 0,
            dropped: 0,
            down_since: None,
        }
    }

    /// Notifications waiting for Redis.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the last delivery (or connection attempt) worked.
    pub fn up(&self) -> bool {
        self.down_since.is_none() && self.conn.is_some()
    }

    /// Queues a notification (dropping the oldest past [`QUEUE_MAX`]).
    pub fn push(&mut self, n: Notification) {
        if self.queue.len() >= QUEUE_MAX {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(n);
    }

    fn connect(&mut self) -> Result<&mut redis::Connection, String> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.target.url.as_str())
                .map_err(|e| format!("redis {}: {e}", self.target.url))?;
            let conn = client
                .get_connection_with_timeout(std::time::Duration::from_secs(2))
                .map_err(|e| format!("redis {}: {e}", self.target.url))?;
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Sends what is queued, in order; stops at the first failure (the
    /// rest stays queued, the connection is dropped to be made again).
    /// Says on stderr when Redis goes away and when it is back.
    pub fn flush(&mut self) {
        while let Some(n) = self.queue.front().cloned() {
            match self.deliver(&n) {
                Ok(added) => {
                    if added {
                        self.sent += 1;
                    } else {
                        self.duplicates += 1;
                    }
                    self.queue.pop_front();
                    if let Some(was) = self.down_since.take() {
                        eprintln!(
                            "weft: redis {} is back ({was}); {} queued notifications delivered or delivering",
                            self.target.url,
                            self.queue.len() + 1
                        );
                    }
                }
                Err(e) => {
                    self.conn = None;
                    if self.down_since.is_none() {
                        eprintln!(
                            "weft: notifications held ({} queued): {e}",
                            self.queue.len()
                        );
                        self.down_since = Some(e);
                    }
                    return;
                }
            }
        }
        // Keep a connection's health known even when nothing is sent.
        if self.queue.is_empty() && self.down_since.is_some() && self.connect().is_ok() {
            self.down_since = None;
        }
    }

    fn deliver(&mut self, n: &Notification) -> Result<bool, String> {
        let target = self.target.clone();
        let script = self.script.clone();
        let conn = self.connect()?;
        let dedup = format!("{}:dedup:{}", target.stream, n.dedup_key());
        let labels = n.json();
        let value = if n.value.is_finite() {
            n.value.to_string()
        } else {
            String::new()
        };
        let fields: [(&str, String); 12] = [
            ("status", n.status.to_string()),
            ("alertname", n.alertname.clone()),
            ("severity", n.severity.clone()),
            ("summary", n.summary.clone()),
            ("value", value),
            ("fingerprint", n.fingerprint.clone()),
            ("group", n.group.clone()),
            ("starts_at_ns", n.starts_at_ns.to_string()),
            ("ends_at_ns", n.ends_at_ns.to_string()),
            ("repeat", n.repeat.to_string()),
            ("dedup", n.dedup_key()),
            ("json", labels.clone()),
        ];
        let mut inv = script.prepare_invoke();
        inv.key(&target.stream)
            .key(&dedup)
            .arg(target.maxlen)
            .arg(DEDUP_TTL_S)
            .arg(&target.channel)
            .arg(&labels);
        for (k, v) in &fields {
            inv.arg(*k).arg(v);
        }
        let id: Option<String> = inv
            .invoke(conn)
            .map_err(|e| format!("redis {}: {e}", target.url))?;
        Ok(id.is_some())
    }
}

/// `weft-stat watch`: follows the notification stream with a consumer
/// group, printing each entry and acknowledging it once printed. A
/// consumer restarted under the same name first gets what it had read but
/// not acknowledged; a new group starts at the stream's beginning.
/// Returns after `max` entries (if given), else runs until killed.
pub fn watch(
    target: &Target,
    group: &str,
    consumer: &str,
    max: Option<u64>,
    json: bool,
) -> Result<(), String> {
    let client = redis::Client::open(target.url.as_str())
        .map_err(|e| format!("redis {}: {e}", target.url))?;
    let mut printed = 0u64;
    let mut said_down = false;
    loop {
        let mut conn = match client.get_connection_with_timeout(std::time::Duration::from_secs(2)) {
            Ok(c) => c,
            Err(e) => {
                if !said_down {
                    eprintln!("watch: redis {}: {e}; retrying", target.url);
                    said_down = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                continue;
            }
        };
        said_down = false;
        // The group, from the start of the stream (BUSYGROUP: it exists).
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&target.stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut conn);
        if let Err(e) = created {
            if !e.to_string().contains("BUSYGROUP") {
                return Err(format!("redis XGROUP CREATE: {e}"));
            }
        }
        // Pending (read, not acknowledged) first, then new entries.
        let mut from = "0".to_string();
        loop {
            let reply: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg(consumer)
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&target.stream)
                .arg(&from)
                .query(&mut conn);
            let entries = match reply {
                Ok(v) => entries_of(&v),
                Err(e) => {
                    eprintln!("watch: redis {}: {e}; reconnecting", target.url);
                    break;
                }
            };
            if entries.is_empty() && from == "0" {
                from = ">".into();
                continue;
            }
            for (id, fields) in entries {
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map_or("", |(_, v)| v.as_str())
                };
                if json {
                    println!("{{\"id\":\"{id}\",\"notification\":{}}}", get("json"));
                } else {
                    // The alert's own labels (not alertname and severity,
                    // which have their columns).
                    let labels = serde_json::from_str::<serde_json::Value>(get("json"))
                        .ok()
                        .and_then(|v| {
                            let m = v.get("labels")?.as_object()?.clone();
                            Some(
                                m.iter()
                                    .filter(|(k, _)| *k != "alertname" && *k != "severity")
                                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            )
                        })
                        .unwrap_or_default();
                    println!(
                        "{id} {:<8} {:<20} {:<8} {{{labels}}} {}",
                        get("status"),
                        get("alertname"),
                        get("severity"),
                        get("summary")
                    );
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                    .arg(&target.stream)
                    .arg(group)
                    .arg(&id)
                    .query(&mut conn);
                if let Err(e) = acked {
                    eprintln!("watch: XACK {id}: {e}");
                }
                printed += 1;
                if max.is_some_and(|m| printed >= m) {
                    return Ok(());
                }
            }
        }
    }
}

/// The (id, fields) of an XREADGROUP reply (its streams' entries, in
/// order) or an XRANGE reply (its entries).
pub fn entries_of(v: &redis::Value) -> Vec<(String, Vec<(String, String)>)> {
    use redis::Value;
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn entry(e: &Value) -> Option<(String, Vec<(String, String)>)> {
        let Value::Array(parts) = e else { return None };
        let id = text(parts.first()?)?;
        let Value::Array(kv) = parts.get(1)? else {
            return None;
        };
        let fields = kv
            .chunks(2)
            .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
            .collect();
        Some((id, fields))
    }
    let list = |v: &Value| -> Vec<(String, Vec<(String, String)>)> {
        match v {
            Value::Array(es) => es.iter().filter_map(entry).collect(),
            _ => Vec::new(),
        }
    };
    // XREADGROUP's [stream, [entries]] and XRANGE's entry [id, [field,
    // value, ...]] are both pairs: a stream's list holds entries (arrays) or
    // nothing; an entry's holds at least one field and value (strings).
    let is_stream = |pair: &[Value]| matches!(pair, [_, Value::Array(es)] if es.first().is_none_or(|e| matches!(e, Value::Array(_))));
    match v {
        // XREADGROUP: [[stream, [entries]]] (RESP2), or a map (RESP3);
        // XRANGE: [entries].
        Value::Array(items) => items
            .iter()
            .flat_map(|s| match s {
                Value::Array(pair) if is_stream(pair) => list(&pair[1]),
                entry_or_other => entry(entry_or_other).into_iter().collect(),
            })
            .collect(),
        Value::Map(m) => m.iter().flat_map(|(_, es)| list(es)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Notification {
        let labels: BTreeMap<String, String> =
            [("alertname", "WeftDaily"), ("host", "a \"quoted\" host")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        Notification {
            status: "report",
            alertname: "WeftDaily".into(),
            severity: "info".into(),
            summary: "line one\nline two".into(),
            fingerprint: fingerprint(&labels),
            labels,
            value: f64::NAN,
            group: String::new(),
            starts_at_ns: 7,
            ends_at_ns: 0,
            repeat: 0,
        }
    }

    /// XREADGROUP and XRANGE replies, whose entries and streams have the
    /// same shape (a pair), read as the entries they hold.
    #[test]
    fn stream_replies_of_both_kinds_read_as_their_entries() {
        use redis::Value;
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let entry =
            |id: &str, k: &str, v: &str| Value::Array(vec![s(id), Value::Array(vec![s(k), s(v)])]);
        let want = |ids: &[&str]| -> Vec<(String, Vec<(String, String)>)> {
            ids.iter()
                .map(|id| (id.to_string(), vec![("status".to_string(), id.to_string())]))
                .collect()
        };
        let range = Value::Array(vec![
            entry("1-0", "status", "1-0"),
            entry("2-0", "status", "2-0"),
        ]);
        assert_eq!(entries_of(&range), want(&["1-0", "2-0"]));
        let group = Value::Array(vec![Value::Array(vec![
            s("weft:alerts"),
            Value::Array(vec![entry("3-0", "status", "3-0")]),
        ])]);
        assert_eq!(entries_of(&group), want(&["3-0"]));
        let nothing_pending = Value::Array(vec![Value::Array(vec![
            s("weft:alerts"),
            Value::Array(vec![]),
        ])]);
        assert_eq!(entries_of(&nothing_pending), want(&[]));
        assert_eq!(entries_of(&Value::Nil), want(&[]));
    }

    #[test]
    fn the_json_form_parses_back_with_its_labels_and_no_value() {
        let n = report();
        let v: serde_json::Value = serde_json::from_str(&n.json()).unwrap();
        assert_eq!(v["status"], "report");
        assert_eq!(v["summary"], "line one\nline two");
        assert_eq!(v["labels"]["host"], "a \"quoted\" host");
        assert!(v["value"].is_null());
        assert_eq!(n.dedup_key(), format!("{}:7:report:0", n.fingerprint));
    }

    #[test]
    fn the_fingerprint_is_of_the_labels_only() {
        let a = report();
        let mut b = report();
        b.summary = "other".into();
        assert_eq!(a.fingerprint, fingerprint(&b.labels));
        b.labels.insert("host".into(), "other".into());
        assert_ne!(a.fingerprint, fingerprint(&b.labels));
    }
}
