//! Guests for proving the kernel WireGuard backend: this machine's kernel
//! has no WireGuard module, so lab nodes run as QEMU guests booted from a
//! Debian kernel that has one ([`image`], built by `tools/kvm/image.sh`),
//! each a node of a lab underlay bridge through a tap device in the bridge's
//! namespace ([`guest`]). Everything a guest runs comes from the host over
//! 9p: the freshly built binaries read-only, and a per-guest directory the
//! harness drives it through.

pub mod guest;
pub mod image;
pub mod lab;

pub use self::guest::{Guest, GuestSpec};
pub use self::image::{Accel, GuestImage};
pub use self::lab::GuestLab;
