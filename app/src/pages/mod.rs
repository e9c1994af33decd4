//! One module per page.

mod home;
mod jobs;
mod layer;
mod model;
mod neuron;
mod not_found;
mod study;

pub use home::Home;
pub use jobs::{JobPage, JobsPage};
pub use layer::LayerPage;
pub use model::ModelPage;
pub use neuron::NeuronPage;
pub use not_found::NotFound;
pub use study::{AdminPage, RatePage, StudyPage};
