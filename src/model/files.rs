//! A model's files: the ONNX file, and the external-data files it names for its weights
//! (`mlflow.onnx.log_model` moves every tensor of 1 KiB or more into one by default). They are
//! read once, hashed together, and loaded into ONNX Runtime from the very bytes hashed.
//!
//! The sha256 of a model without external data is the ONNX file's own, so the same file gives
//! the same sha256 from a path or from a registry. With external data it covers every file: the
//! ONNX file's bytes, then for each external file in name order `\0`, its name, `\0`, its bytes.

use std::io::Read;
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

use super::proto::{EXTERNAL, GraphProto, ModelProto};

/// The name a cached model's ONNX file has (external-data files keep theirs, beside it).
pub const MODEL_FILE: &str = "model.onnx";

/// The largest ONNX file: protobuf's limit (larger weights live in external-data files).
const MAX_MODEL_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    pub model: Vec<u8>,
    /// External-data files by the name the model gives them, in name order.
    pub external: Vec<(String, Vec<u8>)>,
    /// The ONNX file's graph, as far as [`super::proto`] reads it (`None` when prost cannot):
    /// decoded once, for the external files it names and for [`super::Model::open`].
    pub graph: Option<GraphProto>,
}

impl ModelFiles {
    pub fn new(model: Vec<u8>) -> ModelFiles {
        ModelFiles {
            graph: ModelProto::read(&model).and_then(|m| m.graph),
            model,
            external: Vec::new(),
        }
    }

    /// Read the ONNX file at `path` and the external-data files it names, from its folder.
    pub fn read(path: &Path) -> Result<ModelFiles, String> {
        let mut files = ModelFiles::new(read_model(path)?);
        let folder = path.parent().unwrap_or(Path::new("."));
        for location in files.external_locations()? {
            let side = folder.join(&location);
            let bytes = std::fs::read(&side).map_err(|e| {
                format!(
                    "model file {} keeps weights in {}, which cannot be read: {e}",
                    path.display(),
                    side.display()
                )
            })?;
            files.add_external(location, bytes);
        }
        Ok(files)
    }

    pub fn add_external(&mut self, location: String, bytes: Vec<u8>) {
        self.external.push((location, bytes));
        self.external.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The external-data files the ONNX file names, each once, in name order. A name that could
    /// leave the model's folder (absolute, or with `..`) is refused, as ONNX Runtime does.
    pub fn external_locations(&self) -> Result<Vec<String>, String> {
        // A model prost cannot read names none: ONNX Runtime says what is wrong with it.
        let mut locations: Vec<String> = self
            .graph
            .iter()
            .flat_map(|g| &g.initializer)
            .filter(|t| t.data_location == EXTERNAL)
            .filter_map(|t| {
                t.external_data
                    .iter()
                    .find(|entry| entry.key == "location")
                    .map(|entry| entry.value.clone())
            })
            .collect();
        locations.sort();
        locations.dedup();
        for location in &locations {
            let plain = Path::new(location)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if location.is_empty() || !plain {
                return Err(format!(
                    "the model keeps weights in `{location}`, which is not a file beside it"
                ));
            }
        }
        Ok(locations)
    }

    /// The model's sha256, hex (see the module's comment).
    pub fn sha256(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.model);
        for (name, bytes) in &self.external {
            hash.update(b"\0");
            hash.update(name.as_bytes());
            hash.update(b"\0");
            hash.update(bytes);
        }
        hex::encode(hash.finalize())
    }

    /// Write the files into `dir`: the ONNX file as [`MODEL_FILE`], the others by their names.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(MODEL_FILE), &self.model)?;
        for (name, bytes) in &self.external {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        Ok(())
    }
}

/// The model file's bytes, after the checks that need none of them: not empty, not larger than
/// an ONNX file can be, and starting like one (a ModelProto field). So a file that is not a model
/// at all, a gigabyte of zeros say, is refused at once, not read into memory and parsed first.
fn read_model(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read model file {shown}: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size == 0 {
        return Err(format!("model file {shown} is empty"));
    }
    if size > MAX_MODEL_BYTES {
        return Err(format!(
            "model file {shown} is {size} bytes, more than an ONNX file can hold (2 GiB)"
        ));
    }
    let mut head = [0u8; 10];
    let read = file.read(&mut head).map_err(cannot)?;
    if !starts_like_a_model(&head[..read]) {
        return Err(format!(
            "model file {shown} is not an ONNX model: it does not start like one (an ONNX \
             ModelProto's first field)"
        ));
    }
    let mut bytes = head[..read].to_vec();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// Whether `head` begins with the tag of a field an ONNX ModelProto has (numbers 1 to 26, as a
/// varint or a length-delimited field: ir_version, opset_import, graph, …).
fn starts_like_a_model(head: &[u8]) -> bool {
    let mut tag: u64 = 0;
    for (i, byte) in head.iter().take(5).enumerate() {
        tag |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let (field, wire) = (tag >> 3, tag & 7);
            return (1..=26).contains(&field) && matches!(wire, 0 | 2);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::proto::{GraphProto, StringStringEntryProto, TensorProto};
    use prost::Message;

    fn with_external(locations: &[&str]) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto {
                initializer: locations
                    .iter()
                    .map(|l| TensorProto {
                        external_data: vec![StringStringEntryProto {
                            key: "location".into(),
                            value: (*l).into(),
                        }],
                        data_location: EXTERNAL,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn external_data_is_found_and_hashed_with_the_model() {
        let files = ModelFiles::new(with_external(&["w.bin", "a.bin", "w.bin"]));
        assert_eq!(files.external_locations().unwrap(), ["a.bin", "w.bin"]);
        let alone = files.sha256();
        assert_eq!(alone, hex::encode(Sha256::digest(&files.model)));
        let mut with = files.clone();
        with.add_external("w.bin".into(), vec![1, 2]);
        let mut other = files.clone();
        other.add_external("w.bin".into(), vec![1, 3]);
        assert_ne!(with.sha256(), alone);
        assert_ne!(with.sha256(), other.sha256());
        let escaping = ModelFiles::new(with_external(&["../secret"]));
        assert!(escaping.external_locations().is_err());
    }
}
