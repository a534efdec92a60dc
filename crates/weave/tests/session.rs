//! Run options go to building and to the session, never into the parsed file model: the
//! caller's limits over the file's, the cache folder resolved flag > `$WEAVE_CACHE_DIR` >
//! `[cache] dir` > `.weave/cache` beside the file.

use weave::{BuildOptions, PipelineFile, RunOptions, Session};

const TEXT: &str = r#"
[resources]
max_memory = "1GB"

[cache]
dir = "kept"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#;

#[test]
fn the_callers_options_win_over_the_files_and_the_file_over_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, TEXT).unwrap();
    let file = PipelineFile::read(&path).unwrap();
    let registry = weave::registry();
    // Only the caller's environment could say otherwise; these tests do not set it.
    if std::env::var_os(weave::CACHE_DIR_ENV).is_some() {
        return;
    }

    let plain = file.build(&registry, &BuildOptions::default()).unwrap();
    assert_eq!(plain.resources.max_memory, 1_000_000_000);
    let session = Session::new(plain, Some(file.clone()), RunOptions::default()).unwrap();
    assert_eq!(session.cache_dir(), Some(dir.path().join("kept").as_path()), "the file's [cache] dir");
    assert_eq!(session.quarantine(), Some(dir.path().join(".weave/quarantine.jsonl").as_path()));

    let options =
        RunOptions { cache_dir: Some(dir.path().join("flag")), max_memory: Some(5_000_000), ..RunOptions::default() };
    let p = file.build(&registry, &options.build_options()).unwrap();
    assert_eq!(p.resources.max_memory, 5_000_000, "the caller's limit");
    assert_eq!(p.cache_dir, Some(dir.path().join("kept")), "the file model keeps what the file says");
    let session = Session::new(p, Some(file.clone()), options).unwrap();
    assert_eq!(session.cache_dir(), Some(dir.path().join("flag").as_path()), "the caller's folder");

    // The caller's limits are checked as the file's are.
    let wide = BuildOptions { max_concurrent: Some(0), ..BuildOptions::default() };
    let err = file.build(&registry, &wide).unwrap_err();
    assert!(err.to_string().contains("`max_concurrent` must be from 1 to 1024, not 0"), "{err}");

    let bare = TEXT.replace("[cache]\ndir = \"kept\"\n", "");
    std::fs::write(&path, bare).unwrap();
    let file = PipelineFile::read(&path).unwrap();
    let p = file.build(&registry, &BuildOptions::default()).unwrap();
    let session = Session::new(p, Some(file), RunOptions::default()).unwrap();
    assert_eq!(session.cache_dir(), Some(dir.path().join(".weave/cache").as_path()), "the default");
}
