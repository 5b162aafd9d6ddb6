//! ZipMap class labels, read from the model file. ONNX Runtime reports a ZipMap output's type
//! (a sequence of maps from class label to probability) but not which labels the maps hold, so
//! the labels come from the ZipMap node in the graph: `jobs validate` can then refuse
//! `output_probability["west"]` for a model that has no class "west", before any row is read.
//!
//! Only the few protobuf fields needed are declared; prost skips the rest (weights included)
//! without copying them.

use std::collections::HashMap;

/// The class labels of a ZipMap output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    Integer(Vec<i64>),
    Text(Vec<String>),
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = match self {
            Labels::Integer(labels) => labels.iter().map(i64::to_string).collect(),
            Labels::Text(labels) => labels.iter().map(|l| format!("{l:?}")).collect(),
        };
        f.write_str(&shown.join(", "))
    }
}

/// The labels of every ZipMap in the model, by the name of the output it produces. A model the
/// reader cannot make sense of has none listed: its labels are then checked while scoring.
pub fn zipmap_labels(model: &[u8]) -> HashMap<String, Labels> {
    let Ok(model) = <ModelProto as prost::Message>::decode(model) else {
        return HashMap::new();
    };
    let nodes = model.graph.map(|g| g.node).unwrap_or_default();
    nodes
        .into_iter()
        .filter(|node| node.op_type == "ZipMap")
        .filter_map(|node| {
            let output = node.output.into_iter().next()?;
            let labels = node
                .attribute
                .into_iter()
                .find_map(|a| match a.name.as_str() {
                    "classlabels_int64s" => Some(Labels::Integer(a.ints)),
                    "classlabels_strings" => Some(Labels::Text(
                        a.strings
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    )),
                    _ => None,
                })?;
            Some((output, labels))
        })
        .collect()
}

// The subset of onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto) read here;
// the tags are the file's.

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn zipmap(output: &str, attribute: AttributeProto) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    NodeProto {
                        output: vec!["probabilities".into()],
                        op_type: "LinearClassifier".into(),
                        attribute: vec![],
                    },
                    NodeProto {
                        output: vec![output.into()],
                        op_type: "ZipMap".into(),
                        attribute: vec![attribute],
                    },
                ],
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn labels_are_read_by_output_name() {
        let ints = zipmap(
            "output_probability",
            AttributeProto {
                name: "classlabels_int64s".into(),
                ints: vec![0, 1],
                strings: vec![],
            },
        );
        assert_eq!(
            zipmap_labels(&ints)["output_probability"],
            Labels::Integer(vec![0, 1])
        );
        let strings = zipmap(
            "p",
            AttributeProto {
                name: "classlabels_strings".into(),
                ints: vec![],
                strings: vec![b"north".to_vec(), b"south".to_vec()],
            },
        );
        let labels = &zipmap_labels(&strings)["p"];
        assert_eq!(labels.to_string(), "\"north\", \"south\"");
        assert!(zipmap_labels(b"not a model").is_empty());
    }
}
