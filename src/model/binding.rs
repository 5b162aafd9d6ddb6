//! Binding a model to a job, before any row is read: which columns feed which model input (by
//! `[inputs]`, by name, or all into one matrix) and which output fills which result column (a
//! tensor's column, or one class of a ZipMap), each checked against the model's declared types
//! and shapes.

use ort::value::{TensorElementType, ValueType};

use super::{Labels, Model, ModelInput, element_name};
use crate::element::Element;
use crate::features::InputFeed;
use crate::sink::ResultType;
use crate::spec::{JobSpec, OutputSpec, Pick};

/// One result column bound to the model output that fills it.
#[derive(Debug, Clone)]
pub struct BoundOutput {
    pub spec: OutputSpec,
    pub read: OutputRead,
    pub result_type: ResultType,
}

/// How a result column's values are read out of the model's output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputRead {
    /// A 1-D tensor, or column `column` of a 2-D one.
    Tensor { element: Element, column: usize },
    /// One class's probability out of a ZipMap (a sequence of maps, one per row).
    ZipMap { label: ClassLabel },
}

/// A ZipMap class label, of the type the map's keys have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabel {
    Integer(i64),
    Text(String),
}

/// The model's inputs and outputs matched to the job: which columns feed which input, and
/// which output fills which result column.
#[derive(Debug, Clone)]
pub struct Binding {
    pub inputs: Vec<InputFeed>,
    pub outputs: Vec<BoundOutput>,
}

impl Model {
    /// Match the job to this model: feed every input from its columns (by `[inputs]`, by name,
    /// or all features into a single input) and bind each result column to its output.
    /// Every problem names the model file.
    pub fn bind(&self, spec: &JobSpec) -> Result<Binding, String> {
        let bound = || -> Result<Binding, String> {
            let inputs = self
                .match_inputs(spec)?
                .into_iter()
                .map(|(input, columns)| self.feed(spec, input, columns))
                .collect::<Result<_, _>>()?;
            let outputs = spec
                .outputs
                .iter()
                .map(|output| self.bind_output(output))
                .collect::<Result<_, _>>()?;
            Ok(Binding { inputs, outputs })
        };
        bound().map_err(|problem| {
            let path = self.origin.to_string();
            match problem.contains(&path) {
                true => problem,
                false => format!("model {path}: {problem}"),
            }
        })
    }

    /// Each model input, in the model's order, with the feature columns that feed it.
    fn match_inputs(&self, spec: &JobSpec) -> Result<Vec<(&ModelInput, Vec<usize>)>, String> {
        let names = || {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            names.join(", ")
        };
        let features = &spec.source.features;
        if let Some(listed) = &spec.inputs {
            return self.inputs_as_listed(listed, &names);
        }
        let position = |name: &str| features.iter().position(|f| f.as_str() == name);
        let by_name = self.inputs.iter().all(|i| position(&i.name).is_some());
        if by_name && (self.inputs.len() > 1 || features.len() == 1) {
            // One input per column, named after it: the standard per-column export.
            if let Some(unused) = features
                .iter()
                .find(|f| !self.inputs.iter().any(|i| i.name == f.as_str()))
            {
                return Err(format!(
                    "source.features lists `{unused}`, but model {} has no input of that name (its inputs: {})",
                    self.origin,
                    names()
                ));
            }
            return Ok(self
                .inputs
                .iter()
                .map(|i| (i, vec![position(&i.name).expect("matched by name")]))
                .collect());
        }
        match self.inputs.as_slice() {
            // One input: every feature, in order, as its columns.
            [input] => Ok(vec![(input, (0..features.len()).collect())]),
            _ => {
                let unmatched: Vec<&str> = self
                    .inputs
                    .iter()
                    .filter(|i| position(&i.name).is_none())
                    .map(|i| i.name.as_str())
                    .collect();
                Err(format!(
                    "model {} has {} inputs ({}), and source.features has no column named {}: \
                     name the features after the inputs, or map each input to its columns in [inputs]",
                    self.origin,
                    self.inputs.len(),
                    names(),
                    unmatched
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }

    /// The model's inputs, each fed by the columns `[inputs]` lists for it.
    fn inputs_as_listed(
        &self,
        listed: &[crate::spec::InputSpec],
        names: &dyn Fn() -> String,
    ) -> Result<Vec<(&ModelInput, Vec<usize>)>, String> {
        if let Some(unknown) = listed
            .iter()
            .find(|l| !self.inputs.iter().any(|i| i.name == l.name))
        {
            return Err(format!(
                "inputs.{0}: model {1} has no input `{0}` (its inputs: {2})",
                unknown.name,
                self.origin,
                names()
            ));
        }
        self.inputs
            .iter()
            .map(|input| {
                let columns = listed
                    .iter()
                    .find(|l| l.name == input.name)
                    .map(|l| l.columns.clone())
                    .ok_or_else(|| {
                        format!(
                            "model input `{}` is fed by nothing: add it to [inputs] (model {} has inputs: {})",
                            input.name,
                            self.origin,
                            names()
                        )
                    })?;
                Ok((input, columns))
            })
            .collect()
    }

    /// Check that `columns` can feed `input` (element type, rank, width, a dynamic batch).
    fn feed(
        &self,
        spec: &JobSpec,
        input: &ModelInput,
        columns: Vec<usize>,
    ) -> Result<InputFeed, String> {
        let name = &input.name;
        let ValueType::Tensor { ty, shape, .. } = &input.dtype else {
            return Err(format!(
                "model input `{name}` is a {}, not a tensor; batchscore feeds tensors",
                input.dtype
            ));
        };
        let element = Element::of(*ty).ok_or_else(|| {
            format!(
                "model input `{name}` has element type {}; batchscore feeds {}",
                element_name(*ty),
                Element::SUPPORTED
            )
        })?;
        if let Some(&batch) = shape.first()
            && batch > 0
        {
            return Err(format!(
                "model input `{name}` has a fixed batch size of {batch}; export it with a dynamic first dimension"
            ));
        }
        let fed_by = || {
            let names: Vec<&str> = columns
                .iter()
                .map(|&c| spec.source.features[c].as_str())
                .collect();
            names.join(", ")
        };
        match shape.len() {
            1 if columns.len() != 1 => Err(format!(
                "model input `{name}` is 1-D ([N]), so one column feeds it, not {} ({})",
                columns.len(),
                fed_by()
            )),
            2 if shape[1] > 0 && shape[1] as usize != columns.len() => {
                Err(match spec.inputs.is_none() && self.inputs.len() == 1 {
                    true => format!(
                        "model {} expects {} features, but source.features lists {}",
                        self.origin,
                        shape[1],
                        columns.len()
                    ),
                    false => format!(
                        "model input `{name}` takes {} columns, but {} feed it ({})",
                        shape[1],
                        columns.len(),
                        fed_by()
                    ),
                })
            }
            rank @ (1 | 2) => Ok(InputFeed {
                name: name.clone(),
                element,
                columns,
                rank,
            }),
            rank => Err(format!(
                "model input `{name}` has {rank} dimensions; batchscore feeds [N] or [N, columns]"
            )),
        }
    }

    fn bind_output(&self, output: &OutputSpec) -> Result<BoundOutput, String> {
        let (_, dtype) = self
            .outputs
            .iter()
            .find(|(name, _)| *name == output.output)
            .ok_or_else(|| {
                let names: Vec<&str> = self.outputs.iter().map(|(name, _)| name.as_str()).collect();
                format!(
                    "outputs.{} refers to `{}`, but model {} has outputs: {}",
                    output.column,
                    output.output,
                    self.origin,
                    names.join(", ")
                )
            })?;
        let at = || format!("outputs.{} = {:?}", output.column, output.reference());
        let read = match dtype {
            ValueType::Tensor { ty, shape, .. } => {
                let element = Element::of(*ty).ok_or_else(|| {
                    format!(
                        "{}: output `{}` has element type {}; batchscore reads {}",
                        at(),
                        output.output,
                        element_name(*ty),
                        Element::SUPPORTED
                    )
                })?;
                let column = tensor_column(output, shape).map_err(|p| format!("{}: {p}", at()))?;
                OutputRead::Tensor { element, column }
            }
            ValueType::Sequence(item) => match item.as_ref() {
                ValueType::Map {
                    key,
                    value: TensorElementType::Float32,
                } => {
                    let label = self
                        .zipmap_label(output, *key)
                        .map_err(|p| format!("{}: {p}", at()))?;
                    OutputRead::ZipMap { label }
                }
                other => {
                    return Err(format!(
                        "{}: output `{}` is a sequence of {other}; batchscore reads tensors and ZipMaps (maps of class to float)",
                        at(),
                        output.output
                    ));
                }
            },
            other => {
                return Err(format!(
                    "{}: output `{}` is a {other}; batchscore reads tensors and ZipMaps",
                    at(),
                    output.output
                ));
            }
        };
        let result_type = match &read {
            OutputRead::Tensor { element, .. } => ResultType::for_element(*element),
            OutputRead::ZipMap { .. } => ResultType::Float,
        };
        Ok(BoundOutput {
            spec: output.clone(),
            read,
            result_type,
        })
    }

    /// The class a ZipMap reference picks, checked against the model's labels when the model
    /// file lists them.
    fn zipmap_label(
        &self,
        output: &OutputSpec,
        key: TensorElementType,
    ) -> Result<ClassLabel, String> {
        let name = &output.output;
        let labels = self.zipmaps.get(name);
        let classes = labels.map_or_else(String::new, |l| format!(" (its classes: {l})"));
        let label = match (key, &output.pick) {
            (TensorElementType::Int64, Some(Pick::Index(label))) => ClassLabel::Integer(*label),
            (TensorElementType::String, Some(Pick::Label(label))) => {
                ClassLabel::Text(label.clone())
            }
            (TensorElementType::Int64, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap with integer classes{classes}: pick one, like {name}[1]"
                ));
            }
            (TensorElementType::String, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap with string classes{classes}: pick one, like {name}[\"label\"]"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap keyed by {other}; batchscore reads int64 or string class labels"
                ));
            }
        };
        let known = match (labels, &label) {
            (None, _) => true, // not listed in the file: checked while scoring
            (Some(Labels::Integer(all)), ClassLabel::Integer(l)) => all.contains(l),
            (Some(Labels::Text(all)), ClassLabel::Text(l)) => all.contains(l),
            (Some(_), _) => false,
        };
        if !known {
            return Err(format!(
                "ZipMap output `{name}` has no class {}{classes}",
                match &label {
                    ClassLabel::Integer(l) => l.to_string(),
                    ClassLabel::Text(l) => format!("{l:?}"),
                }
            ));
        }
        Ok(label)
    }
}

/// Which column of a tensor output a reference picks (0 for 1-D and `[N, 1]` outputs).
fn tensor_column(output: &OutputSpec, shape: &[i64]) -> Result<usize, String> {
    let name = &output.output;
    match (shape.len(), &output.pick) {
        (_, Some(Pick::Label(label))) => Err(format!(
            "output `{name}` is a tensor, not a ZipMap, so it takes a column number, not the label {label:?}"
        )),
        (1, None) => Ok(0),
        (1, Some(_)) => Err(format!("output `{name}` is 1-D, so it takes no [index]")),
        (2, Some(Pick::Index(index))) if shape[1] > 0 && *index >= shape[1] => Err(format!(
            "index {index} is out of range, output `{name}` has {} columns",
            shape[1]
        )),
        (2, Some(Pick::Index(index))) => Ok(*index as usize),
        (2, None) if shape[1] == 1 => Ok(0),
        (2, None) => Err(format!(
            "output `{name}` is 2-D with {} columns; pick one, like \"{name}[1]\"",
            if shape[1] > 0 {
                shape[1].to_string()
            } else {
                "several".to_owned()
            },
        )),
        (rank, _) => Err(format!(
            "output `{name}` has {rank} dimensions; batchscore reads 1-D or 2-D outputs"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::parse_job;

    const REPO: &str = env!("CARGO_MANIFEST_DIR");

    /// A job over `features` scoring with `model` (relative to the repository), with `rest` for
    /// its `[outputs]` and anything after.
    fn spec(model: &str, features: &str, rest: &str) -> JobSpec {
        let text = format!(
            "schedule = \"0 * * * *\"\n[source]\ntable = \"t\"\nkey = \"id\"\ntimestamp = \"ts\"\n\
             {features}\n[window]\nsize = \"1h\"\n[model]\npath = \"{model}\"\n{rest}\n[sink]\ntable = \"r\"\n"
        );
        parse_job("job", &text, Path::new(REPO)).unwrap()
    }

    fn bind(model: &str, features: &str, rest: &str) -> Result<Binding, String> {
        let spec = spec(model, features, rest);
        let crate::spec::ModelSource::File(path) = &spec.model.source else {
            unreachable!("a path")
        };
        let located = crate::model::Located::file(path.clone());
        Model::open("job", located, None).unwrap().bind(&spec)
    }

    const SENSORS: &str = r#"features = ["temperature", "vibration", "pressure", "rpm"]"#;
    const FAILURE: &str = "models/machine_failure.onnx";

    #[test]
    fn a_single_matrix_input_takes_every_feature_in_order() {
        let outputs = "[outputs]\nlabel = \"label\"\np = \"probabilities[1]\"";
        let binding = bind(FAILURE, SENSORS, outputs).unwrap();
        let [input] = binding.inputs.as_slice() else {
            panic!("{:?}", binding.inputs)
        };
        assert_eq!(
            (input.columns.as_slice(), input.rank),
            (&[0, 1, 2, 3][..], 2)
        );
        let reads: Vec<(&OutputRead, ResultType)> = binding
            .outputs
            .iter()
            .map(|o| (&o.read, o.result_type))
            .collect();
        assert_eq!(
            reads,
            [
                (
                    &OutputRead::Tensor {
                        element: Element::Int64,
                        column: 0
                    },
                    ResultType::Integer
                ),
                (
                    &OutputRead::Tensor {
                        element: Element::Float32,
                        column: 1
                    },
                    ResultType::Float
                ),
            ]
        );
    }

    #[test]
    fn a_matrix_of_another_width_or_an_output_it_lacks_is_refused_naming_the_model() {
        let outputs = "[outputs]\np = \"probabilities[1]\"";
        let three = r#"features = ["temperature", "vibration", "pressure"]"#;
        let err = bind(FAILURE, three, outputs).unwrap_err();
        assert!(
            err.contains("expects 4 features, but source.features lists 3"),
            "{err}"
        );
        assert!(err.contains("machine_failure.onnx"), "{err}");
        for (output, says) in [
            ("probabilities[2]", "column"),
            ("score", "refers to `score`, but model"),
            ("probabilities[\\\"x\\\"]", "not a ZipMap"),
        ] {
            let err = bind(FAILURE, SENSORS, &format!("[outputs]\np = \"{output}\"")).unwrap_err();
            assert!(
                err.contains(says) && err.contains("machine_failure.onnx"),
                "{output}: {err}"
            );
        }
    }

    #[test]
    fn per_column_inputs_match_features_by_name() {
        let features = r#"features = ["zone", "distance_km", "items", "hour", "raining"]"#;
        let binding = bind(
            "models/delivery_eta.onnx",
            features,
            "[outputs]\neta = \"variable\"",
        )
        .unwrap();
        let fed: Vec<(&str, &[usize])> = binding
            .inputs
            .iter()
            .map(|i| (i.name.as_str(), i.columns.as_slice()))
            .collect();
        assert_eq!(
            fed,
            [
                ("distance_km", &[1][..]),
                ("items", &[2][..]),
                ("hour", &[3][..]),
                ("raining", &[4][..]),
                ("zone", &[0][..])
            ]
        );
        let extra = r#"features = ["zone", "distance_km", "items", "hour", "raining", "tip"]"#;
        let err = bind(
            "models/delivery_eta.onnx",
            extra,
            "[outputs]\neta = \"variable\"",
        )
        .unwrap_err();
        assert!(err.contains("lists `tip`, but model"), "{err}");
    }

    #[test]
    fn inputs_listed_by_hand_must_name_the_models_inputs() {
        let listed = "[inputs]\nfeatures = [\"temperature\", \"vibration\", \"pressure\", \"rpm\"]";
        let outputs = format!("{listed}\n[outputs]\np = \"probabilities[1]\"");
        assert!(bind(FAILURE, "", &outputs).is_ok());
        let wrong = "[inputs]\nx = [\"temperature\", \"vibration\", \"pressure\", \"rpm\"]\n[outputs]\np = \"probabilities[1]\"";
        let err = bind(FAILURE, "", wrong).unwrap_err();
        assert!(
            err.contains("inputs.x: model") && err.contains("has no input `x`"),
            "{err}"
        );
    }

    #[test]
    fn zipmap_classes_bind_by_label_and_unknown_classes_are_refused() {
        let features = r#"features = ["region", "amount", "items"]"#;
        let model = "tests/fixtures/churn_zipmap.onnx";
        let binding = bind(model, features, "[outputs]\np = \"output_probability[1]\"").unwrap();
        assert_eq!(
            binding.outputs[0].read,
            OutputRead::ZipMap {
                label: ClassLabel::Integer(1)
            }
        );
        let err = bind(model, features, "[outputs]\np = \"output_probability[7]\"").unwrap_err();
        assert!(
            err.contains('7') && err.contains("churn_zipmap.onnx"),
            "{err}"
        );
    }
}
