//! The device interrupt vector table (cortex-m-rt's `device` feature expects the application
//! to provide `__INTERRUPTS`). Two interrupts are used; every other vector goes to
//! `DefaultHandler`, which puts the motor in the safe state and records the fault.

use crate::regs::irq;

/// One vector table entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    _reserved: usize,
}

extern "C" {
    fn DefaultHandler();
}

#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [Vector; irq::COUNT] = {
    let mut table = [Vector {
        handler: DefaultHandler,
    }; irq::COUNT];
    table[irq::ADC1_2 as usize] = Vector {
        handler: crate::adc_isr,
    };
    table[irq::TIM1_UP_TIM16 as usize] = Vector {
        handler: crate::control_isr,
    };
    table
};

/// A device interrupt number, for cortex-m's NVIC API.
#[derive(Clone, Copy)]
pub struct Irq(pub u16);

// SAFETY: the numbers used are valid STM32G431 interrupt numbers (below `irq::COUNT`).
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}
