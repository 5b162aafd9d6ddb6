//! The tensor element types batchscore feeds and reads: one table for model inputs, model
//! outputs and result columns, so that what `jobs validate` accepts is exactly what a run can
//! score and store.

use ort::value::TensorElementType;

/// An ONNX tensor element type batchscore can build (inputs) and read (outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    Float32,
    Float64,
    Int64,
    Int32,
    Bool,
    String,
}

impl Element {
    /// The supported element type for `ty`, or `None`: every other ONNX type is refused when the
    /// job is prepared, never halfway through a run.
    pub fn of(ty: TensorElementType) -> Option<Element> {
        Some(match ty {
            TensorElementType::Float32 => Element::Float32,
            TensorElementType::Float64 => Element::Float64,
            TensorElementType::Int64 => Element::Int64,
            TensorElementType::Int32 => Element::Int32,
            TensorElementType::Bool => Element::Bool,
            TensorElementType::String => Element::String,
            _ => return None,
        })
    }

    /// The name people see in messages and in `jobs validate`: ONNX Runtime's own.
    pub fn name(self) -> &'static str {
        match self {
            Element::Float32 => "float32",
            Element::Float64 => "float64",
            Element::Int64 => "int64",
            Element::Int32 => "int32",
            Element::Bool => "bool",
            Element::String => "string",
        }
    }

    /// The supported types, for messages that say what would have worked.
    pub const SUPPORTED: &str = "float32, float64, int64, int32, bool or string";
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_six_readable_types_are_supported() {
        use TensorElementType::*;
        for ty in [Float32, Float64, Int64, Int32, Bool, String] {
            assert!(Element::of(ty).is_some(), "{ty}");
        }
        for ty in [
            Int8, Int16, Uint8, Uint16, Uint32, Uint64, Float16, Bfloat16,
        ] {
            assert!(
                Element::of(ty).is_none(),
                "{ty} would pass validation and fail scoring"
            );
        }
    }
}
