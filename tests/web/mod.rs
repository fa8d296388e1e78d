mod listener;
mod proxy;
