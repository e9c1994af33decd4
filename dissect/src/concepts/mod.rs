//! Steps 2 and 3 of the method (docs/method.md): candidate concepts from captions of `D_top`, and the
//! selection of the concept whose own images make the neuron fire most.

pub mod classifier_captioner;
pub mod embedded;
pub mod feature_encoder;
pub mod grounded;
pub mod pipeline;
pub mod providers;
pub mod retrieval;
pub mod scoring;
pub mod shared_model;
pub mod summarize;

pub use providers::{
    cosine, CaptionInput, Captioner, ChatMessage, ChatModel, ChatRequest, ComponentInfo, ConceptImage,
    ConceptImageSource, ImageEncoder, ProviderError, ProviderResult, Role, TextEncoder,
};
