//! A model's inputs and outputs as its file declares them, read without ONNX Runtime. A run
//! binds the model to the job from these, and builds ONNX Runtime's session (a quarter of a
//! short run with a heavy model) only when a window has a row to score; the session's own
//! signature is checked against them when it is built.

use ort::value::{Shape, SymbolicDimensions, TensorElementType, ValueType};

use super::ModelInput;
use super::proto::{GraphProto, TypeProto};

/// The graph's inputs (less those an initializer fills, as ONNX Runtime lists them) and
/// outputs, each with its declared type.
#[derive(Debug, Clone)]
pub struct Signature {
    pub inputs: Vec<ModelInput>,
    pub outputs: Vec<(String, ValueType)>,
}

impl Signature {
    /// The signature `graph` declares; `None` when any input or output has a type this reader
    /// does not know (a sparse tensor, an element type ONNX Runtime has no name for, or none at
    /// all): the session is then built at once and says.
    pub fn read(graph: &GraphProto) -> Option<Signature> {
        let filled = |name: &str| graph.initializer.iter().any(|t| t.name == name);
        let inputs = graph
            .input
            .iter()
            .filter(|i| !filled(&i.name))
            .map(|i| {
                Some(ModelInput {
                    name: i.name.clone(),
                    dtype: value_type(i.r#type.as_ref()?)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let outputs = graph
            .output
            .iter()
            .map(|o| Some((o.name.clone(), value_type(o.r#type.as_ref()?)?)))
            .collect::<Option<Vec<_>>>()?;
        if inputs.is_empty() || outputs.is_empty() {
            return None;
        }
        Some(Signature { inputs, outputs })
    }

    /// Where ONNX Runtime's reading of the model differs from this one, described; `None` when
    /// they agree on every name, element type, rank and dimension the file fixes (not on the
    /// symbols' names, which nothing uses).
    pub fn differs_from(&self, session: &Signature) -> Option<String> {
        let inputs = self.inputs.iter().map(|i| (&i.name, &i.dtype));
        let theirs = session.inputs.iter().map(|i| (&i.name, &i.dtype));
        let ours: Vec<_> = inputs
            .chain(self.outputs.iter().map(|(n, t)| (n, t)))
            .collect();
        let theirs: Vec<_> = theirs
            .chain(session.outputs.iter().map(|(n, t)| (n, t)))
            .collect();
        let same = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|((a, x), (b, y))| a == b && same_type(x, y));
        (!same).then(|| format!("the file declares {ours:?}, ONNX Runtime reads {theirs:?}"))
    }
}

fn same_type(a: &ValueType, b: &ValueType) -> bool {
    match (a, b) {
        (
            ValueType::Tensor { ty, shape, .. },
            ValueType::Tensor {
                ty: ty_b,
                shape: shape_b,
                ..
            },
        ) => {
            // ONNX Runtime may know a dimension the file leaves open (it infers the outputs'
            // shapes from the inputs'): it only narrows what binding allowed.
            let dims_agree = shape.len() == shape_b.len()
                && shape
                    .iter()
                    .zip(shape_b.iter())
                    .all(|(a, b)| *a == -1 || a == b);
            ty == ty_b && dims_agree
        }
        (ValueType::Sequence(a), ValueType::Sequence(b))
        | (ValueType::Optional(a), ValueType::Optional(b)) => same_type(a, b),
        (a, b) => a == b,
    }
}

/// A `TypeProto` as ONNX Runtime reports it: a dimension without a number is -1. A tensor
/// without a shape (of unknown rank, which ONNX Runtime may infer) is not read.
fn value_type(ty: &TypeProto) -> Option<ValueType> {
    if ty.sparse_tensor_type.is_some() {
        return None;
    }
    if let Some(tensor) = &ty.tensor_type {
        let dims = tensor.shape.as_ref()?.dim.as_slice();
        return Some(ValueType::Tensor {
            ty: element(tensor.elem_type)?,
            shape: Shape::new(dims.iter().map(|d| d.dim_value.unwrap_or(-1))),
            dimension_symbols: SymbolicDimensions::new(
                dims.iter().map(|d| d.dim_param.clone().unwrap_or_default()),
            ),
        });
    }
    if let Some(sequence) = &ty.sequence_type {
        return Some(ValueType::Sequence(Box::new(value_type(
            sequence.elem_type.as_ref()?,
        )?)));
    }
    if let Some(map) = &ty.map_type {
        let value = map.value_type.as_ref()?.tensor_type.as_ref()?;
        return Some(ValueType::Map {
            key: element(map.key_type)?,
            value: element(value.elem_type)?,
        });
    }
    if let Some(optional) = &ty.optional_type {
        return Some(ValueType::Optional(Box::new(value_type(
            optional.elem_type.as_ref()?,
        )?)));
    }
    None
}

/// `TensorProto.DataType` as ONNX Runtime's element type (the numbering is the same).
fn element(data_type: i32) -> Option<TensorElementType> {
    use TensorElementType::*;
    Some(match data_type {
        1 => Float32,
        2 => Uint8,
        3 => Int8,
        4 => Uint16,
        5 => Int16,
        6 => Int32,
        7 => Int64,
        8 => String,
        9 => Bool,
        10 => Float16,
        11 => Float64,
        12 => Uint32,
        13 => Uint64,
        14 => Complex64,
        15 => Complex128,
        16 => Bfloat16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::proto::ModelProto;

    const REPO: &str = env!("CARGO_MANIFEST_DIR");

    /// Every model in the repository, the hostile ones too.
    fn models() -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for dir in [
            "models",
            "bench/models",
            "tests/fixtures",
            "tests/fixtures/hostile",
        ] {
            for entry in std::fs::read_dir(Path::new(REPO).join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "onnx") {
                    found.push(path);
                }
            }
        }
        assert!(found.len() >= 15, "{found:?}");
        found
    }

    /// The file's signature is ONNX Runtime's, for every model it can load.
    #[test]
    fn the_signature_read_from_the_file_is_onnx_runtimes() {
        let environment = crate::model::onnxruntime::environment().unwrap();
        let mut compared = 0;
        for path in models() {
            let bytes = std::fs::read(&path).unwrap();
            let graph = ModelProto::read(&bytes).unwrap().graph.unwrap();
            let read = Signature::read(&graph)
                .unwrap_or_else(|| panic!("{}: no signature read", path.display()));
            let Ok(session) = ort::session::Session::builder(environment)
                .unwrap()
                .commit_from_memory(&bytes)
            else {
                continue; // the hostile ones ONNX Runtime refuses
            };
            let theirs = crate::model::session_signature(&session);
            assert_eq!(read.differs_from(&theirs), None, "{}", path.display());
            compared += 1;
        }
        assert!(compared >= 15, "{compared}");
    }

    #[test]
    fn a_difference_is_found_and_initializers_are_not_inputs() {
        use crate::model::proto::*;
        let tensor = |elem_type, dims: &[Option<i64>]| ValueInfoProto {
            name: String::new(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                dim_value: *d,
                                dim_param: d.is_none().then(|| "N".to_owned()),
                            })
                            .collect(),
                    }),
                }),
                ..Default::default()
            }),
        };
        let named = |name: &str, mut v: ValueInfoProto| {
            v.name = name.into();
            v
        };
        let graph = GraphProto {
            input: vec![
                named("x", tensor(1, &[None, Some(4)])),
                named("w", tensor(1, &[Some(4)])),
            ],
            initializer: vec![TensorProto {
                name: "w".into(),
                ..Default::default()
            }],
            output: vec![named("y", tensor(7, &[None]))],
            ..Default::default()
        };
        let read = Signature::read(&graph).unwrap();
        assert_eq!(read.inputs.len(), 1);
        assert_eq!(
            read.inputs[0].dtype,
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new([-1, 4]),
                dimension_symbols: SymbolicDimensions::new(["N".to_owned(), String::new()]),
            }
        );
        let mut other = read.clone();
        other.outputs[0].1 = ValueType::Tensor {
            ty: TensorElementType::Float64,
            shape: Shape::new([-1]),
            dimension_symbols: SymbolicDimensions::new([String::new()]),
        };
        assert!(read.differs_from(&other).is_some());
        assert_eq!(read.differs_from(&read.clone()), None);
        // A dimension the file leaves open, which ONNX Runtime knows: no difference.
        let mut narrowed = read.clone();
        narrowed.inputs[0].dtype = ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::new([1000, 4]),
            dimension_symbols: SymbolicDimensions::new([String::new(), String::new()]),
        };
        assert_eq!(read.differs_from(&narrowed), None);
        assert!(narrowed.differs_from(&read).is_some());
        // An output of no known type: no signature, the session is built at once.
        let mut untyped = graph.clone();
        untyped.output[0].r#type = None;
        assert!(Signature::read(&untyped).is_none());
    }
}
