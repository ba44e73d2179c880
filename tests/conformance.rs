//! The ONNX backend-test cases in scope (tests/conformance/cases.tsv), run by convgraph and
//! checked against the committed expectations (tests/conformance/expectations.tsv): a case
//! that starts or stops passing fails this test until the file is updated, so the count of
//! passing cases only goes up on purpose. Regenerate the file with
//! `CONVGRAPH_UPDATE_EXPECTATIONS=1 cargo nextest run --test conformance`.
//!
//! The cases are made by `scripts/fetch-data.sh` from the pinned onnx wheel into
//! `data/onnx-cases/<suite>/<case>`; `CONVGRAPH_ONNX_CASES=<dir>` points the tests at another
//! folder of the same layout (a scratch copy). Every case folder's total size must equal the
//! `bytes` column of cases.tsv, measured on the cases onnx's own tooling generated, so the
//! tests fail if `scripts/make_onnx_cases.py` ever writes other files than onnx's.

use convgraph::verify::conformance::{find_cases, run_case, CaseResult, Status};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases_root() -> PathBuf {
    let root = match std::env::var_os("CONVGRAPH_ONNX_CASES") {
        Some(dir) => PathBuf::from(dir),
        None => manifest().join("data/onnx-cases"),
    };
    assert!(
        root.join("node/test_relu/model.onnx").exists(),
        "{} is missing: run `scripts/fetch-data.sh` (writes the ONNX backend-test cases)",
        root.display()
    );
    root
}

/// A case in scope: `suite/case`, and the total size of its folder and its model's opset as
/// onnx's own tooling generated it.
struct ScopeCase {
    name: String,
    bytes: u64,
    opset: i64,
}

fn in_scope() -> Vec<ScopeCase> {
    let text = std::fs::read_to_string(manifest().join("tests/conformance/cases.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "cases.tsv: suite, case, bytes, opset: {l}");
            ScopeCase {
                name: format!("{}/{}", f[0], f[1]),
                bytes: f[2].parse().unwrap(),
                opset: f[3].parse().unwrap(),
            }
        })
        .collect()
}

/// Total size of the files under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                folder_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// The default-domain opset the model imports, read with tract's protobuf types rather than
/// our importer.
fn model_opset(path: &Path) -> Option<i64> {
    let bytes = std::fs::read(path).unwrap();
    let model = <tract_onnx::pb::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

#[test]
fn case_folders_are_the_ones_onnx_tooling_generates() {
    let root = cases_root();
    let mut wrong = Vec::new();
    for c in in_scope() {
        let dir = root.join(&c.name);
        if !dir.is_dir() {
            wrong.push(format!("{}: missing", c.name));
            continue;
        }
        let bytes = folder_bytes(&dir);
        if bytes != c.bytes {
            wrong.push(format!(
                "{}: {bytes} bytes, onnx's cmd_tools wrote {}",
                c.name, c.bytes
            ));
        }
        let opset = model_opset(&dir.join("model.onnx"));
        if opset != Some(c.opset) {
            wrong.push(format!("{}: opset {opset:?}, expected {}", c.name, c.opset));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case folders differ from tests/conformance/cases.tsv (rerun scripts/fetch-data.sh; if they still differ, scripts/make_onnx_cases.py writes other files than onnx's tooling):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn line(r: &CaseResult) -> String {
    match &r.status {
        Status::Pass => format!("{}\tPASS", r.name),
        Status::Fail(m) => format!("{}\tFAIL\t{m}", r.name),
        Status::Error(m) => format!("{}\tERROR\t{m}", r.name),
    }
}

#[test]
fn conformance_cases_match_expectations() {
    let root = cases_root();
    let found: Vec<(String, PathBuf)> = find_cases(&root).unwrap();
    let names: Vec<&String> = found.iter().map(|(n, _)| n).collect();
    let mut scope: Vec<String> = in_scope().into_iter().map(|c| c.name).collect();
    scope.sort();
    assert_eq!(
        names,
        scope.iter().collect::<Vec<_>>(),
        "data/onnx-cases holds other cases than tests/conformance/cases.tsv"
    );
    assert_eq!(scope.len(), 372);

    let results: Vec<CaseResult> = found.iter().map(|(n, d)| run_case(n, d)).collect();
    let path = manifest().join("tests/conformance/expectations.tsv");
    if std::env::var_os("CONVGRAPH_UPDATE_EXPECTATIONS").is_some() {
        let passed = results.iter().filter(|r| r.status == Status::Pass).count();
        let mut text = format!(
            "# convgraph conformance expectations: {passed} of {} pass (rtol 1e-3, atol 1e-5).\n\
             # case<TAB>PASS, or case<TAB>FAIL|ERROR<TAB>reason. Written by\n\
             # CONVGRAPH_UPDATE_EXPECTATIONS=1 cargo nextest run --test conformance\n",
            results.len()
        );
        for r in &results {
            text += &line(r);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
    }

    let expected: BTreeMap<String, String> = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next().unwrap().to_string();
            let status = f.next().unwrap_or("").to_string();
            if status != "PASS" {
                assert!(
                    f.next().is_some_and(|r| !r.is_empty()),
                    "{name}: no reason recorded"
                );
            }
            (name, status)
        })
        .collect();
    let mut changed = Vec::new();
    for r in &results {
        let now = line(r);
        let status = now.split('\t').nth(1).unwrap();
        match expected.get(&r.name) {
            Some(s) if s == status => {}
            Some(s) => changed.push(format!(
                "{}: expected {s}, now {}",
                r.name,
                &now[r.name.len() + 1..]
            )),
            None => changed.push(format!("{}: not in expectations.tsv", r.name)),
        }
    }
    assert!(
        changed.is_empty() && expected.len() == results.len(),
        "{} cases changed (update with CONVGRAPH_UPDATE_EXPECTATIONS=1 if intended):\n{}",
        changed.len(),
        changed.join("\n")
    );
}

fn conformance_cmd(dirs: &[PathBuf]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_convgraph"))
        .arg("conformance")
        .args(dirs)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn conformance_command_reports_each_case_and_the_totals() {
    let root = cases_root();
    let (code, out) = conformance_cmd(&[root.join("node/test_relu"), root.join("node/test_add")]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().next(), Some("PASS test_relu"));
    assert_eq!(out.lines().nth(1), Some("PASS test_add"));
    assert_eq!(out.lines().last(), Some("2 passed, 0 failed"));

    // A copy of test_relu whose expected output is its input: Relu changes the negative
    // values, so the case must fail, with exit code 1.
    let bad = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance/test_relu_wrong");
    let set = bad.join("test_data_set_0");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(
        root.join("node/test_relu/model.onnx"),
        bad.join("model.onnx"),
    )
    .unwrap();
    let src = root.join("node/test_relu/test_data_set_0/input_0.pb");
    std::fs::copy(&src, set.join("input_0.pb")).unwrap();
    std::fs::copy(&src, set.join("output_0.pb")).unwrap();
    let (code, out) = conformance_cmd(&[bad]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("FAIL test_relu_wrong: test_data_set_0: output 0 'y':"),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("0 passed, 1 failed"));
}
