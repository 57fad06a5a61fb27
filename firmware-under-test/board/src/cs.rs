//! The `critical-section` implementation for this single-core MCU.
//!
//! It saves the interrupt mask with `MRS PRIMASK` and restores it with `CPSIE I` rather than
//! `MSR PRIMASK` (what cortex-m's `critical-section-single-core` emits), so that the emulated
//! rig's instruction-set emulator, which lacks `MSR PRIMASK`, runs this firmware unchanged.
//! The behaviour is the same: interrupts are re-enabled only if they were enabled on entry.

use cortex_m::register::primask;

struct SingleCore;
critical_section::set_impl!(SingleCore);

// SAFETY: single core; disabling interrupts excludes every other context that can run.
unsafe impl critical_section::Impl for SingleCore {
    unsafe fn acquire() -> bool {
        let was_enabled = primask::read().is_active();
        cortex_m::interrupt::disable();
        was_enabled
    }

    unsafe fn release(was_enabled: bool) {
        if was_enabled {
            // SAFETY: restores the state found by `acquire`.
            unsafe { cortex_m::interrupt::enable() };
        }
    }
}
