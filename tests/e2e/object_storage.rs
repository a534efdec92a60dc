//! Object storage through the real binary: `s3://` inputs and exports against a local
//! S3-compatible server (moto, which .ci/run starts and names in `WEAVE_TEST_S3_ENDPOINT`;
//! without it, the S3 tests say so and do nothing), and `http://` inputs from a small web
//! server in this process. Globs over prefixes, split exports, failed, cancelled and
//! killed uploads leaving no object, credentials in nothing the run writes, re-runs that
//! are cache hits without a download, and errors that name the URL.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{Output, SHARD_VARIABLES};

/// The credentials the tests give the binary: neither may appear in anything it writes.
const ACCESS_KEY: &str = "AKIAE2EWEAVE7Q3XKEY";
const SECRET: &str = "e2e-SECRET-s3-9f1c0b7a2d5e";
const TOKEN: &str = "e2e-SESSION-TOKEN-3c8e1f";

/// The S3 server's endpoint, or `None` (and a note) when none was started.
fn endpoint() -> Option<String> {
    match std::env::var("WEAVE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            // A skip is worth saying (the harness shows it with --nocapture).
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipped: no S3 server (.ci/run starts moto and sets WEAVE_TEST_S3_ENDPOINT)");
            }
            None
        }
    }
}

/// `weave` with `args` in `dir`, with the test credentials and `endpoint` in the
/// environment (and a home of its own, so that no profile of the machine is read).
fn command(dir: &Path, args: &[&str], endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
    for v in SHARD_VARIABLES {
        c.env_remove(v);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HOME", dir.join("home"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint);
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().expect("the weave binary runs");
    Output {
        code: out.status.code().expect("weave exited on its own"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn weave(dir: &Path, args: &[&str], endpoint: &str) -> Output {
    run(&mut command(dir, args, endpoint))
}

/// An HTTP/1.1 request to `url` (`http://host:port/path?query`) with a made-up signature
/// (moto checks none, but refuses anonymous writes over an object): the status and the body.
fn http(method: &str, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).expect("the server answers");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDTESTHELPER/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).expect("request sent");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let status = String::from_utf8_lossy(&answer[..split]).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut body = answer[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 4 + n..];
    }
    out
}

/// A bucket of its own for a test (moto keeps every bucket until it stops).
fn bucket(endpoint: &str, name: &str) -> String {
    let b = format!("weave-{name}-{}", std::process::id());
    let (status, body) = http("PUT", &format!("{endpoint}/{b}"), b"");
    assert_eq!(status, 200, "create bucket {b}: {}", String::from_utf8_lossy(&body));
    b
}

fn put(endpoint: &str, bucket: &str, key: &str, body: &[u8]) {
    let (status, answer) = http("PUT", &format!("{endpoint}/{bucket}/{key}"), body);
    assert_eq!(status, 200, "put {key}: {}", String::from_utf8_lossy(&answer));
}

fn get(endpoint: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let (status, body) = http("GET", &format!("{endpoint}/{bucket}/{key}"), b"");
    (status == 200).then_some(body)
}

/// The keys in `bucket`, sorted.
fn keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let (status, body) = http("GET", &format!("{endpoint}/{bucket}?list-type=2"), b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut out: Vec<String> =
        text.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect();
    out.sort();
    out
}

/// The multipart uploads of `bucket` begun and neither completed nor aborted.
fn open_uploads(endpoint: &str, bucket: &str) -> usize {
    let (_, body) = http("GET", &format!("{endpoint}/{bucket}?uploads"), b"");
    String::from_utf8_lossy(&body).matches("<Upload>").count()
}

fn lines(n: std::ops::Range<usize>) -> String {
    n.map(|i| format!("{{\"id\":{i},\"text\":\"row {i}\"}}\n")).collect()
}

fn ids(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["id"].as_u64().expect("id"))
        .collect()
}

/// Fails if a credential is in any file under `dir` or in `texts`.
fn no_credentials(dir: &Path, texts: &[&str]) {
    for f in crate::llm::files(dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for s in [ACCESS_KEY, SECRET, TOKEN] {
            assert!(memchr::memmem::find(&bytes, s.as_bytes()).is_none(), "{} holds a credential", f.display());
        }
    }
    for t in texts {
        for s in [ACCESS_KEY, SECRET, TOKEN] {
            assert!(!t.contains(s), "a credential was printed: {t}");
        }
    }
}

fn pipeline(load: &str, export: &str) -> String {
    format!(
        "[pipeline]\nname = \"remote\"\n\n[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\n{load}\n\n[[step]]\nid = \"export\"\nkind = \"export_jsonl\"\n{export}\n"
    )
}

#[test]
fn a_glob_over_an_s3_prefix_reads_matching_objects_in_key_order_and_reruns_from_the_cache() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "glob");
    put(&ep, &b, "data/part-1.jsonl.zst", &zstd::encode_all(lines(3..6).as_bytes(), 3).expect("zstd"));
    put(&ep, &b, "data/part-0.jsonl", lines(0..3).as_bytes());
    put(&ep, &b, "data/part-2.jsonl", lines(6..8).as_bytes());
    // Not matched: another folder (`*` stays within one part of the key), another name.
    put(&ep, &b, "data/old/part-9.jsonl", lines(90..91).as_bytes());
    put(&ep, &b, "data/notes.txt", b"not data\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(&format!("path = \"s3://{b}/data/part-*\""), "path = \"out.jsonl\"");
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");

    // With every library's log lines on (the HTTP client's, the TLS stack's), which must
    // hold no credential either.
    let out = run(command(dir.path(), &["run", "p.toml"], &ep).env("RUST_LOG", "trace"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("reqwest"), "the client's log lines are shown: {}", out.stderr);
    let read = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    assert_eq!(ids(&read), (0..8).collect::<Vec<_>>());

    // `weave plan` names the step unchanged and the re-run takes it from the cache.
    let plan = weave(dir.path(), &["plan", "p.toml", "--explain"], &ep);
    assert!(plan.stdout.contains("export (cached): unchanged"), "{}\n{}", plan.stdout, plan.stderr);
    let again = weave(dir.path(), &["run", "p.toml"], &ep);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report = crate::cli::last_report(dir.path());
    let load = report["steps"].as_array().expect("steps").iter().find(|s| s["step"] == "load").expect("load").clone();
    assert_ne!(load["cache"], "miss", "{report:#}");
    assert_eq!(load["records_in"].as_u64().unwrap_or(0), 0, "the load read nothing again: {report:#}");

    // An object changed in place (same key, same size) changes the key: read again.
    put(&ep, &b, "data/part-0.jsonl", lines(10..13).as_bytes());
    let plan = weave(dir.path(), &["plan", "p.toml", "--explain"], &ep);
    assert!(!plan.stdout.contains("export (cached)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("remote_objects"), "the change is named: {}", plan.stdout);
    let changed = weave(dir.path(), &["run", "p.toml"], &ep);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    let read = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    assert_eq!(ids(&read), [10, 11, 12, 3, 4, 5, 6, 7]);
    no_credentials(dir.path(), &[&out.stderr, &out.stdout, &again.stderr, &changed.stderr, &plan.stdout]);
}

#[test]
fn a_split_export_to_s3_appears_whole_with_its_manifest_and_parquet_reads_back_by_ranges() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "split");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.jsonl"), lines(0..250)).expect("input");
    let p = pipeline(
        "path = \"in.jsonl\"\nbatch_size = 50",
        &format!("path = \"s3://{b}/out/part-{{index}}.jsonl.gz\"\nmax_rows = 100"),
    ) + &format!(
        "\n[[step]]\nid = \"parquet\"\nkind = \"export_parquet\"\nafter = [\"load\"]\npath = \"s3://{b}/pq/all.parquet\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let out = run(command(dir.path(), &["run", "p.toml"], &ep).env("RUST_LOG", "trace"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    no_credentials(dir.path(), &[&out.stdout, &out.stderr]);
    let listed = keys(&ep, &b);
    let parts: Vec<&String> = listed.iter().filter(|k| k.starts_with("out/part-")).collect();
    assert_eq!(parts.len(), 3, "{listed:?}");
    assert!(listed.iter().any(|k| k.starts_with("out/") && k.ends_with(".json")), "a manifest: {listed:?}");
    let mut all = Vec::new();
    for k in &parts {
        let gz = get(&ep, &b, k).expect("part");
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).expect("gzip");
        all.extend(ids(&text));
    }
    assert_eq!(all, (0..250).collect::<Vec<_>>());
    assert_eq!(open_uploads(&ep, &b), 0, "every upload was completed");

    // A smaller run of the set: its manifest lists two parts, and the third part of the
    // run before, which no manifest lists any more, is removed, as a local set's is.
    std::fs::write(dir.path().join("in.jsonl"), lines(0..120)).expect("input");
    let again = weave(dir.path(), &["run", "p.toml"], &ep);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let now: Vec<String> = keys(&ep, &b).into_iter().filter(|k| k.starts_with("out/")).collect();
    let parts_now: Vec<&String> = now.iter().filter(|k| k.starts_with("out/part-")).collect();
    assert_eq!(parts_now.len(), 2, "{now:?}");
    assert_eq!(now.len(), 3, "two parts and the manifest, no note of earlier parts: {now:?}");

    // The Parquet object reads back (footer and column chunks by ranged GETs), one column.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).expect("dir");
    let p = format!(
        "[pipeline]\nname = \"back\"\n\n[[step]]\nid = \"load\"\nkind = \"load_parquet\"\npath = \"s3://{b}/pq/all.parquet\"\ncolumns = [\"id\"]\n\n[[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n"
    );
    std::fs::write(back.join("p.toml"), p).expect("pipeline");
    let out = weave(&back, &["run", "p.toml"], &ep);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(back.join("out.jsonl")).expect("output");
    // The second run's object, which replaced the first's whole.
    assert_eq!(ids(&text), (0..120).collect::<Vec<_>>());
    assert!(!text.contains("text"), "only the column asked for");
}

#[test]
fn csv_text_and_json_load_from_s3_and_a_partitioned_export_writes_a_part_per_value() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "formats");
    put(&ep, &b, "in/t.csv", b"id,lang\n1,en\n2,fr\n3,en\n");
    put(&ep, &b, "in/t.txt", b"alpha\nbeta\n");
    put(&ep, &b, "in/t.json", br#"[{"id": 7, "lang": "de"}]"#);
    let dir = tempfile::tempdir().expect("temp dir");
    let p = format!(
        r#"[pipeline]
name = "formats"

[[step]]
id = "csv"
kind = "load_csv"
path = "s3://{b}/in/t.csv"

[[step]]
id = "by_lang"
kind = "export_jsonl"
after = ["csv"]
path = "s3://{b}/out/lang={{lang}}/part.jsonl"

[[step]]
id = "text"
kind = "load_text"
path = "s3://{b}/in/t.txt"

[[step]]
id = "text_out"
kind = "export_jsonl"
after = ["text"]
path = "text.jsonl"

[[step]]
id = "json"
kind = "load_json"
path = "s3://{b}/in/t.json"

[[step]]
id = "json_out"
kind = "export_csv"
after = ["json"]
path = "json.csv"
"#
    );
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let out = weave(dir.path(), &["run", "p.toml"], &ep);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let parts: Vec<String> = keys(&ep, &b).into_iter().filter(|k| k.starts_with("out/lang=")).collect();
    assert_eq!(parts, ["out/lang=en/part.jsonl", "out/lang=fr/part.jsonl"]);
    let en = String::from_utf8(get(&ep, &b, "out/lang=en/part.jsonl").expect("part")).expect("UTF-8");
    assert_eq!(en, "{\"id\":\"1\",\"lang\":\"en\"}\n{\"id\":\"3\",\"lang\":\"en\"}\n");
    let text = std::fs::read_to_string(dir.path().join("text.jsonl")).expect("text");
    assert_eq!(text, "{\"text\":\"alpha\"}\n{\"text\":\"beta\"}\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("json.csv")).expect("csv"), "id,lang\n7,de\n");
}

#[test]
fn shards_read_each_object_whole_once_and_write_their_parts_to_s3() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "shards");
    for i in 0..5 {
        put(&ep, &b, &format!("in/f{i}.jsonl"), lines(i * 10..i * 10 + 10).as_bytes());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(&format!("path = \"s3://{b}/in/*.jsonl\""), &format!("path = \"s3://{b}/out/{{shard}}/x.jsonl\""));
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let mut all = Vec::new();
    for i in 0..3 {
        let out = weave(dir.path(), &["run", "p.toml", "--shard", &format!("{i}/3")], &ep);
        assert_eq!(out.code, 0, "shard {i}: {}\n{}", out.stdout, out.stderr);
    }
    let parts: Vec<String> = keys(&ep, &b).into_iter().filter(|k| k.starts_with("out/")).collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    for k in &parts {
        let text = String::from_utf8(get(&ep, &b, k).expect("part")).expect("UTF-8");
        let got = ids(&text);
        // Each object is one shard's, whole: its ten records together.
        for chunk in got.chunks(10) {
            assert!(chunk.len() == 10 && chunk[9] == chunk[0] + 9, "{k}: {got:?}");
        }
        all.extend(got);
    }
    assert_eq!(all, (0..50).collect::<Vec<_>>(), "every record once, the shards in order");
}

#[test]
fn a_failed_or_cancelled_run_leaves_no_object_and_no_open_upload() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "fail");
    let dir = tempfile::tempdir().expect("temp dir");
    // A record that is not JSON near the end fails the run, after the export took batches.
    let mut input = lines(0..500);
    input.push_str("not json\n");
    std::fs::write(dir.path().join("in.jsonl"), input).expect("input");
    let p = pipeline(
        "path = \"in.jsonl\"\nbatch_size = 10\non_bad_record = \"fail\"",
        &format!("path = \"s3://{b}/out/x.jsonl\""),
    );
    std::fs::write(dir.path().join("p.toml"), &p).expect("pipeline");
    let out = weave(dir.path(), &["run", "p.toml"], &ep);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_eq!(keys(&ep, &b), Vec::<String>::new());
    assert_eq!(open_uploads(&ep, &b), 0);

    // Cancelled (SIGINT) while the load waits on a web server that has not finished.
    let server = WebServer::start();
    server.set("/slow.jsonl", lines(0..100).into_bytes(), "\"v1\"");
    server.stall_after.store(2000, Ordering::SeqCst);
    let p = pipeline(&format!("path = \"{}/slow.jsonl\"", server.url), &format!("path = \"s3://{b}/out/y.jsonl\""));
    std::fs::write(dir.path().join("c.toml"), &p).expect("pipeline");
    let mut child = command(dir.path(), &["run", "c.toml"], &ep)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weave starts");
    let t0 = Instant::now();
    while !server.stalled.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.stalled.load(Ordering::SeqCst), "the run started reading");
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let mut stderr = String::new();
    // The stalled answer ends (as a broken connection) so that the read returns.
    server.release.store(true, Ordering::SeqCst);
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr read");
    let status = child.wait().expect("weave exits");
    assert!(!status.success(), "a cancelled run fails: {stderr}");
    assert_eq!(keys(&ep, &b), Vec::<String>::new(), "{stderr}");
    assert_eq!(open_uploads(&ep, &b), 0);
    no_credentials(dir.path(), &[&out.stderr, &stderr]);
}

#[test]
fn a_process_killed_inside_its_upload_leaves_no_object() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "kill");
    let proxy = StallingProxy::start(&ep);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.jsonl"), lines(0..2000)).expect("input");
    let p = pipeline("path = \"in.jsonl\"", &format!("path = \"s3://{b}/out/x.jsonl\""));
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let mut child = command(dir.path(), &["run", "p.toml"], &proxy.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weave starts");
    let t0 = Instant::now();
    while !proxy.stalled.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(proxy.stalled.load(Ordering::SeqCst), "the upload reached its completion");
    let killed = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    assert!(!child.wait().expect("weave exits").success());
    // The parts were sent, the completion never arrived: S3 shows no object.
    assert_eq!(keys(&ep, &b), Vec::<String>::new());
    assert_eq!(open_uploads(&ep, &b), 1, "the upload was begun and never completed");
}

#[test]
fn s3_errors_name_the_url_and_the_step_and_write_nothing() {
    let Some(ep) = endpoint() else { return };
    let b = bucket(&ep, "errors");
    put(&ep, &b, "data/a.jsonl", lines(0..2).as_bytes());
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (format!("s3://{b}/data/missing.jsonl"), "there is no such object"),
        (format!("s3://weave-no-such-bucket-{}/a.jsonl", std::process::id()), "there is no bucket"),
        (format!("s3://{b}/data/*.csv"), "no object matches the pattern"),
    ];
    for (url, says) in &cases {
        let p = pipeline(&format!("path = \"{url}\""), "path = \"out.jsonl\"");
        std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
        let out = weave(dir.path(), &["run", "p.toml"], &ep);
        assert_ne!(out.code, 0);
        assert!(
            out.stderr.contains(url.trim_end_matches("*.csv")) && out.stderr.contains(says),
            "{url}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("load"), "names the step: {}", out.stderr);
        assert!(!dir.path().join("out.jsonl").exists());
        no_credentials(dir.path(), &[&out.stderr, &out.stdout]);
    }
    // No credentials at all: says which variables to set.
    let p = pipeline(&format!("path = \"s3://{b}/data/a.jsonl\""), "path = \"out.jsonl\"");
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let out = run(command(dir.path(), &["run", "p.toml"], &ep)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN"));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("no credentials for s3://") && out.stderr.contains("AWS_ACCESS_KEY_ID"),
        "{}",
        out.stderr
    );
    // A profile gives them instead (the environment's removed).
    let aws = dir.path().join("home/.aws");
    std::fs::create_dir_all(&aws).expect("dir");
    std::fs::write(
        aws.join("credentials"),
        format!("[e2e]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET}\n"),
    )
    .expect("credentials");
    let out = run(command(dir.path(), &["run", "p.toml"], &ep)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_PROFILE", "e2e"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ids(&std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output")), [0, 1]);
    std::fs::remove_dir_all(dir.path().join("home")).expect("home removed");
    // The endpoint and region from the pipeline's `[storage]` (over the environment's,
    // here an endpoint nothing listens on); credentials there are refused, unrepeated.
    let closed = TcpListener::bind("127.0.0.1:0").expect("a port");
    let dead = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let storage = format!("[storage]\nendpoint = \"{ep}\"\nregion = \"eu-west-1\"\n\n");
    let p = pipeline(&format!("path = \"s3://{b}/data/a.jsonl\""), "path = \"st.jsonl\"").replacen(
        "[[step]]",
        &format!("{storage}[[step]]"),
        1,
    );
    std::fs::write(dir.path().join("st.toml"), &p).expect("pipeline");
    let out = weave(dir.path(), &["run", "st.toml"], &dead);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ids(&std::fs::read_to_string(dir.path().join("st.jsonl")).expect("output")), [0, 1]);
    let leaky = p.replace(&format!("endpoint = \"{ep}\""), &format!("endpoint = \"http://me:{SECRET}@127.0.0.1:1\""));
    std::fs::write(dir.path().join("leaky.toml"), &leaky).expect("pipeline");
    let out = weave(dir.path(), &["validate", "leaky.toml"], &ep);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("must not hold credentials"), "{}", out.stderr);
    // (The snippet under the message quotes the user's own line, as every diagnostic does;
    // nothing was run, so nothing was written.)
    assert!(!dir.path().join("leaky.jsonl").exists());
    std::fs::remove_file(dir.path().join("leaky.toml")).expect("removed");
    // An endpoint that does not answer (a port nothing listens on), after the client's retries.
    std::fs::remove_file(dir.path().join("out.jsonl")).expect("removed");
    let out = weave(dir.path(), &["run", "p.toml"], &dead);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains(&format!("s3://{b}/data/a.jsonl")), "{}", out.stderr);
    assert!(!dir.path().join("out.jsonl").exists());
    no_credentials(dir.path(), &[&out.stderr, &out.stdout]);
}

#[test]
fn an_http_input_is_read_once_and_a_rerun_only_asks_for_its_etag() {
    let server = WebServer::start();
    server.set("/data/in.jsonl", lines(0..40).into_bytes(), "\"etag-1\"");
    // The first answers are 503: retried with backoff, the run goes through.
    server.unavailable.store(3, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(&format!("path = \"{}/data/in.jsonl\"", server.url), "path = \"out.jsonl\"");
    std::fs::write(dir.path().join("p.toml"), p).expect("pipeline");
    let out = crate::cli::weave_in(dir.path(), &["run", "p.toml"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(ids(&std::fs::read_to_string(dir.path().join("out.jsonl")).expect("out")), (0..40).collect::<Vec<_>>());
    let gets = server.gets.load(Ordering::SeqCst);
    assert!(gets >= 1);
    assert_eq!(server.unavailable.load(Ordering::SeqCst), 0, "the 503s were answered and retried");
    // Unchanged: the plan and the re-run ask for the object's ETag (HEAD), never its bytes.
    let plan = crate::cli::weave_in(dir.path(), &["plan", "p.toml", "--explain"]);
    assert!(plan.stdout.contains("export (cached): unchanged"), "{}\n{}", plan.stdout, plan.stderr);
    let again = crate::cli::weave_in(dir.path(), &["run", "p.toml"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(server.gets.load(Ordering::SeqCst), gets, "no download on a cache hit");
    assert!(server.heads.load(Ordering::SeqCst) >= 2);
    // A new version (a new ETag) is read again.
    server.set("/data/in.jsonl", lines(5..10).into_bytes(), "\"etag-2\"");
    let changed = crate::cli::weave_in(dir.path(), &["run", "p.toml"]);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert_eq!(ids(&std::fs::read_to_string(dir.path().join("out.jsonl")).expect("out")), (5..10).collect::<Vec<_>>());
    // A missing object is an error naming its URL.
    let p = pipeline(&format!("path = \"{}/data/gone.jsonl\"", server.url), "path = \"gone.jsonl\"");
    std::fs::write(dir.path().join("g.toml"), p).expect("pipeline");
    let out = crate::cli::weave_in(dir.path(), &["run", "g.toml"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains(&format!("{}/data/gone.jsonl", server.url)), "{}", out.stderr);
    assert!(!dir.path().join("gone.jsonl").exists());
}

/// The objects a [`WebServer`] serves: path → (bytes, ETag).
type Objects = Arc<Mutex<HashMap<String, (Vec<u8>, String)>>>;

/// A web server of fixed objects, in this process: HEAD and GET (with `Range`), an ETag
/// per object, counts of each method, and, for a cancellation test, an answer that stops
/// after some bytes until released.
struct WebServer {
    url: String,
    objects: Objects,
    gets: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
    stall_after: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    /// Requests still to be answered 503 Service Unavailable (a transient failure).
    unavailable: Arc<AtomicUsize>,
}

impl WebServer {
    fn start() -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let s = WebServer {
            url,
            objects: Arc::default(),
            gets: Arc::default(),
            heads: Arc::default(),
            stall_after: Arc::new(AtomicUsize::new(usize::MAX)),
            stalled: Arc::default(),
            release: Arc::default(),
            unavailable: Arc::default(),
        };
        let (objects, gets, heads) = (s.objects.clone(), s.gets.clone(), s.heads.clone());
        let (stall_after, stalled, release) = (s.stall_after.clone(), s.stalled.clone(), s.release.clone());
        let unavailable = s.unavailable.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (objects, gets, heads) = (objects.clone(), gets.clone(), heads.clone());
                let (stall_after, stalled, release) = (stall_after.clone(), stalled.clone(), release.clone());
                let unavailable = unavailable.clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    while let Some((method, path, headers)) = read_head(&mut conn) {
                        if unavailable.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                            let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
                            continue;
                        }
                        let found = objects.lock().expect("objects").get(&path).cloned();
                        let Some((body, etag)) = found else {
                            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                            continue;
                        };
                        let start = headers
                            .get("range")
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split('-').next())
                            .and_then(|n| n.parse::<usize>().ok());
                        let part = &body[start.unwrap_or(0).min(body.len())..];
                        let status = if start.is_some() { "206 Partial Content" } else { "200 OK" };
                        let range = start.map_or(String::new(), |s| {
                            format!("Content-Range: bytes {s}-{}/{}\r\n", body.len().saturating_sub(1), body.len())
                        });
                        let head = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nLast-Modified: Mon, 07 Dec 2026 10:00:00 GMT\r\nAccept-Ranges: bytes\r\n{range}\r\n",
                            part.len()
                        );
                        if conn.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        if method == "HEAD" {
                            heads.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        gets.fetch_add(1, Ordering::SeqCst);
                        let cut = stall_after.load(Ordering::SeqCst).min(part.len());
                        if conn.write_all(&part[..cut]).is_err() {
                            return;
                        }
                        if cut < part.len() {
                            stalled.store(true, Ordering::SeqCst);
                            while !release.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            // Gone, so that a retry of the read cannot finish it either.
                            objects.lock().expect("objects").remove(&path);
                            return;
                        }
                    }
                });
            }
        });
        s
    }

    fn set(&self, path: &str, body: Vec<u8>, etag: &str) {
        self.objects.lock().expect("objects").insert(path.to_owned(), (body, etag.to_owned()));
    }
}

/// An HTTP request's method, path and headers (lower-case names); its body, if any, read
/// and dropped. `None` when the connection ends.
fn read_head(conn: &mut TcpStream) -> Option<(String, String, HashMap<String, String>)> {
    let (head, body) = read_request(conn)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    drop(body);
    Some((method, path, headers))
}

/// One request from `conn`: its head (without the blank line) and its body (by
/// `Content-Length`).
fn read_request(conn: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    buf.truncate(buf.len() - 4);
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some((buf, body))
}

/// A proxy in front of the S3 server that passes every request on except the completion
/// of a multipart upload, which it holds unanswered (for a process killed inside its
/// upload).
struct StallingProxy {
    url: String,
    stalled: Arc<AtomicBool>,
}

impl StallingProxy {
    fn start(upstream: &str) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stalled = Arc::new(AtomicBool::new(false));
        let up = upstream.trim_start_matches("http://").to_owned();
        let flag = stalled.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (up, flag) = (up.clone(), flag.clone());
                std::thread::spawn(move || {
                    let mut conn = conn;
                    // One request per connection: its answer says `Connection: close`.
                    if let Some((head, body)) = read_request(&mut conn) {
                        let text = String::from_utf8_lossy(&head).into_owned();
                        let first = text.split("\r\n").next().unwrap_or_default().to_owned();
                        if first.starts_with("POST ") && first.contains("uploadId=") {
                            flag.store(true, Ordering::SeqCst);
                            // Never answered: the process is killed while it waits.
                            std::thread::sleep(Duration::from_secs(600));
                            return;
                        }
                        let mut server = match TcpStream::connect(&up) {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                        let kept: Vec<&str> =
                            text.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
                        let forwarded = format!("{}\r\nConnection: close\r\n\r\n", kept.join("\r\n"));
                        if server.write_all(forwarded.as_bytes()).and_then(|()| server.write_all(&body)).is_err() {
                            return;
                        }
                        let mut answer = Vec::new();
                        if server.read_to_end(&mut answer).is_err() {
                            return;
                        }
                        // Passed on with `Connection: close`, and the connection closed: the
                        // client opens another for its next request.
                        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
                        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
                        let kept: Vec<&str> =
                            head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
                        let mut out = format!("{}\r\nConnection: close", kept.join("\r\n")).into_bytes();
                        out.extend_from_slice(&answer[split..]);
                        let _ = conn.write_all(&out);
                    }
                });
            }
        });
        StallingProxy { url, stalled }
    }
}
