//! Registry parsing, validation and file status.

use super::*;

const MINIMAL: &str = r#"
default = "a"
[[models]]
id = "a"
name = "A"
family = "llama"
parameters = "1M"
quantization = "Q4_0"
bits_per_weight = 4.5
context_length = 512
engine = "llama_cpp"
instruct = true
license = "MIT"
description = "test"
file = "a.gguf"
size = 3
"#;

fn registry(text: &str, dir: &Path) -> Result<Registry, RegistryError> {
    Registry::parse(text, Path::new("models.toml"), dir)
}

#[test]
fn missing_and_wrong_size_files_are_unavailable_with_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(MINIMAL, dir.path()).unwrap();
    let entry = reg.get("a").unwrap();
    let info = reg.info(entry, false);
    assert!(!info.available);
    assert!(info.reason.unwrap().contains("not downloaded"));
    assert_eq!(info.fix.as_deref(), Some("quantlab models fetch a"));

    std::fs::write(dir.path().join("a.gguf"), b"ab").unwrap();
    let info = reg.info(entry, false);
    assert!(!info.available);
    assert!(info.reason.unwrap().contains("should have 3"));

    std::fs::write(dir.path().join("a.gguf"), b"abc").unwrap();
    assert!(reg.info(entry, false).available);
}

#[test]
fn a_checkpoint_folder_is_present_only_with_every_listed_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("llama_cpp", "bitnet").replace(
        "file = \"a.gguf\"\nsize = 3",
        "file = \"ckpt\"\nhub = { repo = \"o/r\", files = [\"config.json\", \"model.safetensors\"] }",
    );
    let reg = registry(&text, dir.path()).unwrap();
    let entry = reg.get("a").unwrap();
    assert!(!reg.info(entry, false).available);
    std::fs::create_dir(dir.path().join("ckpt")).unwrap();
    std::fs::write(dir.path().join("ckpt/config.json"), b"{}").unwrap();
    let info = reg.info(entry, false);
    assert!(!info.available && info.reason.unwrap().contains("not downloaded"));
    std::fs::write(dir.path().join("ckpt/model.safetensors"), b"1234").unwrap();
    let info = reg.info(entry, false);
    assert!(info.available, "{:?}", info.reason);
    assert_eq!(info.size_bytes, Some(6));
    // A hub source names one file or a list, never both or neither.
    let both = text.replace("files = [", "file = \"x\", files = [");
    assert!(registry(&both, dir.path()).is_err());
}

#[test]
fn rejects_path_escapes_duplicates_and_unknown_default() {
    let dir = tempfile::tempdir().unwrap();
    let escape = MINIMAL.replace("a.gguf", "../etc/passwd");
    assert!(registry(&escape, dir.path()).is_err());
    let dup = format!(
        "{MINIMAL}{}",
        &MINIMAL[MINIMAL.find("[[models]]").unwrap()..]
    );
    assert!(registry(&dup, dir.path())
        .unwrap_err()
        .to_string()
        .contains("twice"));
    let nodefault = MINIMAL.replace("default = \"a\"", "default = \"b\"");
    assert!(registry(&nodefault, dir.path()).is_err());
}

#[test]
fn weights_of_shares_one_file_between_engines() {
    let dir = tempfile::tempdir().unwrap();
    let second = MINIMAL[MINIMAL.find("[[models]]").unwrap()..]
        .replace("id = \"a\"", "id = \"a-candle\"\nweights_of = \"a\"")
        .replace("engine = \"llama_cpp\"", "engine = \"candle\"")
        .replace("file = \"a.gguf\"", "");
    let reg = registry(&format!("{MINIMAL}{second}"), dir.path()).unwrap();
    let (a, b) = (reg.get("a").unwrap(), reg.get("a-candle").unwrap());
    assert_eq!(reg.file_path(a), reg.file_path(b));
    assert_eq!(b.engine, EngineKind::Candle);
    // Naming a model that does not exist, or also giving a file, is refused.
    let dangling = second.replace("weights_of = \"a\"", "weights_of = \"zzz\"");
    let err = registry(&format!("{MINIMAL}{dangling}"), dir.path()).unwrap_err();
    assert!(err.to_string().contains("zzz"), "{err}");
    let both = second.replace("weights_of", "file = \"b.gguf\"\nweights_of");
    let err = registry(&format!("{MINIMAL}{both}"), dir.path()).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn remote_models_need_their_table_and_report_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let remote = MINIMAL[MINIMAL.find("[[models]]").unwrap()..]
        .replace("id = \"a\"", "id = \"r\"")
        .replace("engine = \"llama_cpp\"", "engine = \"remote\"")
        .replace("file = \"a.gguf\"", "");
    let table = "remote = { base_url = \"http://box:8080/v1\", model = \"m\", api_key_env = \"QUANTLAB_UNIT_TEST_UNSET_KEY\" }\n";
    let reg = registry(&format!("{MINIMAL}{remote}{table}"), dir.path()).unwrap();
    let entry = reg.get("r").unwrap();
    let (reason, fix) = reg.unavailability(entry).unwrap();
    assert!(reason.contains("QUANTLAB_UNIT_TEST_UNSET_KEY"), "{reason}");
    assert_eq!(fix, None);
    assert!(source_description(entry).contains("http://box:8080/v1"));
    // No table, a bad URL, or a file beside the table: refused at start-up.
    assert!(registry(&format!("{MINIMAL}{remote}"), dir.path()).is_err());
    let ftp = table.replace("http://", "ftp://");
    assert!(registry(&format!("{MINIMAL}{remote}{ftp}"), dir.path()).is_err());
    let with_file = format!("{MINIMAL}{remote}file = \"x.gguf\"\n{table}");
    assert!(registry(&with_file, dir.path()).is_err());
}

#[test]
fn the_shipped_registry_parses_and_declares_the_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models.toml");
    let reg = Registry::load(&path, Path::new("models")).unwrap();
    assert_eq!(reg.default_id, "smollm2-135m-instruct");
    let engines: HashSet<_> = reg.models.iter().map(|m| m.engine).collect();
    assert!(engines.contains(&EngineKind::LlamaCpp));
    assert!(engines.contains(&EngineKind::Bitnet));
    let candle = reg.get("smollm2-135m-instruct-candle").unwrap();
    assert_eq!(candle.engine, EngineKind::Candle);
    assert_eq!(
        reg.file_path(candle),
        reg.file_path(reg.get(&reg.default_id).unwrap())
    );
    let base = reg.get("gemma-3-270m").unwrap();
    assert!(!base.instruct);
    // The seed's NER model: hub files for the candle runtime, tokenizer from vocab.txt.
    let ner = reg.ner("bert-base-ner").unwrap();
    assert_eq!(ner.runtime, crate::ner::NerRuntime::Candle);
    assert!(ner.files().contains(&"model.safetensors") && ner.files().contains(&"vocab.txt"));
}

#[test]
fn ocr_and_ner_folders_need_their_engine_files_and_say_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    // Top-level keys come before the first table.
    let text = MINIMAL.replacen(
        "default = \"a\"\n",
        "default = \"a\"\ndefault_ocr = \"pp\"\n",
        1,
    ) + r#"
[[ocr_models]]
id = "pp"
name = "PP"
engine = "ppocr"
languages = "en"
license = "x"
description = "x"
folder = "pp"

[[ocr_models]]
id = "web"
name = "Web"
engine = "ocrs"
languages = "en"
license = "x"
description = "x"
folder = "web"
urls = [{ url = "https://example.com/d.onnx", name = "text-detection.onnx" }]

[[ner_models]]
id = "made"
name = "Made"
labels = "x"
license = "x"
description = "x"
runtime = "candle"
folder = "made"
prepare = "python make.py"
"#;
    let reg = registry(&text, dir.path()).unwrap();
    let pp = reg.ocr("pp").unwrap();
    let pp_dir = reg.ocr_dir(pp);
    assert_eq!(
        pp.files(&pp_dir),
        ["detection.rten", "recognition.rten", "dictionary.txt"]
    );
    // Each network may come in either format; the folder decides.
    std::fs::create_dir_all(&pp_dir).unwrap();
    std::fs::write(pp_dir.join("recognition.onnx"), b"x").unwrap();
    assert_eq!(
        pp.files(&pp_dir),
        ["detection.rten", "recognition.onnx", "dictionary.txt"]
    );
    let web = reg.ocr("web").unwrap();
    assert_eq!(
        web.files(&reg.ocr_dir(web)),
        ["text-detection.onnx", "text-recognition.onnx"]
    );
    assert!(reg
        .ocr_unavailability(web)
        .unwrap()
        .contains("quantlab models fetch web"));
    let made = reg.ner("made").unwrap();
    let reason = reg.ner_unavailability(made).unwrap();
    assert!(
        reason.contains("model.safetensors") && reason.contains("python make.py"),
        "{reason}"
    );
    // Present files make them available.
    std::fs::create_dir_all(dir.path().join("web")).unwrap();
    for name in web.files(&reg.ocr_dir(web)) {
        std::fs::write(dir.path().join("web").join(name), b"x").unwrap();
    }
    assert!(reg.ocr_unavailability(web).is_none());

    let plain_http = text.replace("https://example.com", "http://example.com");
    assert!(registry(&plain_http, dir.path()).is_err());
    let wrong_name = text.replace("name = \"text-detection.onnx\"", "name = \"../x\"");
    assert!(registry(&wrong_name, dir.path()).is_err());
}

#[test]
fn output_head_is_a_bitnet_setting_with_known_values() {
    let dir = tempfile::tempdir().unwrap();
    let bitnet = |head: &str| {
        MINIMAL
            .replace("engine = \"llama_cpp\"", "engine = \"bitnet\"")
            .replace(
                "size = 3\n",
                &format!("size = 3\noutput_head = \"{head}\"\n"),
            )
    };
    let reg = registry(&bitnet("bf16"), dir.path()).unwrap();
    assert_eq!(reg.get("a").unwrap().output_head, Some(HeadPrecision::Bf16));
    // Unset means the measured default.
    let unset = MINIMAL.replace("engine = \"llama_cpp\"", "engine = \"bitnet\"");
    let reg = registry(&unset, dir.path()).unwrap();
    assert_eq!(reg.get("a").unwrap().output_head, None);
    let reg = registry(&bitnet("q6_k"), dir.path()).unwrap();
    assert_eq!(reg.get("a").unwrap().output_head, Some(HeadPrecision::Q6K));
    assert!(registry(&bitnet("q4_k"), dir.path()).is_err());
    let llama = MINIMAL.replace("size = 3\n", "size = 3\noutput_head = \"int8\"\n");
    let err = registry(&llama, dir.path()).unwrap_err();
    assert!(err.to_string().contains("bitnet"), "{err}");
}

#[test]
fn models_made_here_are_merged_and_may_not_repeat_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let models_file = dir.path().join("models.toml");
    std::fs::write(&models_file, MINIMAL).unwrap();
    let reg = Registry::load(&models_file, dir.path()).unwrap();
    assert_eq!(reg.models.len(), 1, "no derived file, nothing added");
    let source = reg.get("a").unwrap();
    let new = |id: &str| derived::NewModel {
        id: id.to_string(),
        name: "A · Q8_0".into(),
        family: source.family.clone(),
        parameters: source.parameters.clone(),
        quantization: "Q8_0".into(),
        bits_per_weight: 8.5,
        context_length: source.context_length,
        engine: EngineKind::LlamaCpp,
        instruct: source.instruct,
        license: source.license.clone(),
        description: "made here".into(),
        provenance_note: Some("requantized".into()),
        file: "a.Q8_0.gguf".into(),
        sha256: "0".repeat(64),
        size: 7,
        hub: None,
    };
    derived::add(dir.path(), &new("a-q8-0")).unwrap();
    let merged = Registry::load(&models_file, dir.path()).unwrap();
    let made = merged.get("a-q8-0").expect("merged");
    assert_eq!(made.quantization, "Q8_0");
    assert_eq!(made.engine, EngineKind::LlamaCpp);
    assert_eq!(made.size, Some(7));
    assert_eq!(made.license, "MIT", "copied from the source");
    // A second entry appends; one that repeats a declared id stops start-up, naming the file.
    derived::add(dir.path(), &new("a")).unwrap();
    let err = Registry::load(&models_file, dir.path()).unwrap_err();
    assert!(err.to_string().contains("quantized.toml"), "{err}");
    // Bad entries are refused before anything is written.
    let before = std::fs::read_to_string(dir.path().join(derived::DERIVED_FILE)).unwrap();
    assert!(derived::add(dir.path(), &new("Not An Id")).is_err());
    let after = std::fs::read_to_string(dir.path().join(derived::DERIVED_FILE)).unwrap();
    assert_eq!(before, after);
    // Removing an entry keeps the others; a second removal finds nothing.
    assert!(derived::remove(dir.path(), "a").unwrap());
    assert!(!derived::remove(dir.path(), "a").unwrap());
    let left = Registry::load(&models_file, dir.path()).unwrap();
    assert!(left.get("a-q8-0").is_some_and(|m| m.made_here));
    assert!(
        !left.get("a").unwrap().made_here,
        "the declared one is not made here"
    );
    assert!(derived::remove(dir.path(), "a-q8-0").unwrap());
    assert_eq!(
        Registry::load(&models_file, dir.path())
            .unwrap()
            .models
            .len(),
        1
    );
    // An emptied file still takes new entries (no `models = []` left to clash with them).
    derived::add(dir.path(), &new("a-q8-0")).unwrap();
    assert!(Registry::load(&models_file, dir.path())
        .unwrap()
        .get("a-q8-0")
        .is_some());
    // A model added from the hub keeps its source (its own `[models.hub]` table), through
    // another entry's removal too, so it can be downloaded again.
    let mut added = new("from-hub");
    added.file = "from-hub.gguf".into();
    added.hub = Some(derived::WrittenHub {
        repo: "owner/name".into(),
        file: "q/from-hub.gguf".into(),
        revision: "main".into(),
    });
    derived::add(dir.path(), &added).unwrap();
    derived::add(dir.path(), &new("after-hub")).unwrap();
    assert!(derived::remove(dir.path(), "a-q8-0").unwrap());
    let reg = Registry::load(&models_file, dir.path()).unwrap();
    let hub = reg.get("from-hub").unwrap().hub.as_ref().expect("hub kept");
    assert_eq!(
        (hub.repo.as_str(), hub.file.as_str()),
        ("owner/name", "q/from-hub.gguf")
    );
    assert!(reg.get("after-hub").unwrap().hub.is_none());
    assert!(reg.info(reg.get("from-hub").unwrap(), false).can_fetch);
}
