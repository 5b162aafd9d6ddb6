//! ZipMap class labels, read from the model file. ONNX Runtime reports a ZipMap output's type
//! (a sequence of maps from class label to probability) but not which labels the maps hold, so
//! the labels come from the ZipMap node in the graph: `jobs validate` can then refuse
//! `output_probability["west"]` for a model that has no class "west", before any row is read.
//! The graph is read by [`super::proto`].

use std::collections::HashMap;

use super::proto::GraphProto;

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

/// The labels of every ZipMap in the graph, by the name of the output it produces. A model the
/// reader cannot make sense of has none listed: its labels are then checked while scoring.
pub fn zipmap_labels(graph: &GraphProto) -> HashMap<String, Labels> {
    graph
        .node
        .iter()
        .filter(|node| node.op_type == "ZipMap")
        .filter_map(|node| {
            let output = node.output.first()?.clone();
            let labels = node.attribute.iter().find_map(|a| match a.name.as_str() {
                "classlabels_int64s" => Some(Labels::Integer(a.ints.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::proto::{AttributeProto, NodeProto};

    fn zipmap(output: &str, attribute: AttributeProto) -> GraphProto {
        GraphProto {
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
            ..Default::default()
        }
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
        assert!(zipmap_labels(&GraphProto::default()).is_empty());
    }
}
