//! Switchboard: a chatbot engine for WhatsApp and SMS over Twilio.

pub mod flow;
pub mod message;
pub mod script;
pub mod store;
pub mod twilio;
