//! One module per page.

mod home;
mod model;
mod not_found;

pub use home::Home;
pub use model::ModelPage;
pub use not_found::NotFound;
