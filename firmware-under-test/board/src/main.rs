//! Firmware of the powered IO needle driver board (STM32G431CBUx, Cortex-M4F at 170 MHz).
//!
//! Built for `thumbv7m-none-eabi` (the ARMv7-M baseline: no DSP or FPU instructions, which
//! the integer-only core does not need and the emulated rig's emulator does not implement).
//! See `README.md` for the pin map, wiring, build and the telemetry channels.
//!
//! Runtime: `TIM1` makes 20 kHz PWM; its CH4 compare triggers an ADC1 injected sequence
//! (current, battery) every period, accumulated by [`adc_isr`]; every 20 periods its update
//! interrupt runs [`control_isr`], which calls `driver_core::Controller::step` with the
//! tick's mean readings, applies the command, sends a telemetry frame and refreshes the
//! independent watchdog. The main loop only sleeps (`WFI`).

#![no_std]
#![no_main]

mod cs;
mod fault;
mod hw;
mod regs;
mod vectors;

use core::cell::{Cell, UnsafeCell};
use core::fmt::Write as _;
use core::sync::atomic::Ordering;

use cortex_m::peripheral::{DWT, NVIC};
use cortex_m_rt::entry;
use driver_core::telemetry::{self, fault as fault_bits, Frame, TickRecord, IDENT_LEN};
use driver_core::{sensing, Config, Controller, Inputs, State};
use rtt_target::{rtt_init, UpChannel};

use crate::fault::{NEXT_SEQ, TICK};
use crate::vectors::Irq;

include!(concat!(env!("OUT_DIR"), "/firmware_id.rs"));

/// The firmware identity record: version, commit, core source hash, build id.
#[used]
#[no_mangle]
#[link_section = ".iohil_id"]
pub static IOHIL_FIRMWARE_ID: [u8; IDENT_LEN] = FIRMWARE_ID.to_bytes();

/// The controller tuning: the shipped one, or (test builds only) one that never detects the pop.
#[cfg(not(feature = "broken-detector"))]
const CONFIG: Config = Config::DEFAULT;
#[cfg(feature = "broken-detector")]
const CONFIG: Config = Config {
    detection_enabled: false,
    ..Config::DEFAULT
};

/// ADC readings accumulated over the current tick.
#[derive(Clone, Copy, Default)]
struct Accumulator {
    current: u32,
    battery: u32,
    count: u32,
}

static ADC: critical_section::Mutex<Cell<Accumulator>> =
    critical_section::Mutex::new(Cell::new(Accumulator {
        current: 0,
        battery: 0,
        count: 0,
    }));

/// Everything the control tick owns.
struct Control {
    controller: Controller,
    telemetry: UpChannel,
    log: UpChannel,
    /// Fault bits reported on every frame from now on (watchdog reset, previous fault).
    sticky_faults: u16,
    /// Fault bits for the next frame only (overrun, dropped frame).
    pending_faults: u16,
    /// The trigger must be seen released once after boot before a press counts, so a reset
    /// (watchdog, fault, power) with the trigger held never restarts the motor by itself.
    released_since_boot: bool,
    last_state: State,
    last_cycles: u32,
    /// Consecutive ticks with fewer ADC readings than expected.
    short_ticks: u8,
    /// Current sensing lost: drive removed until reset.
    sensor_fault: bool,
}

/// Owned by [`control_isr`] once [`main`] has filled it (before the interrupt is enabled).
struct IsrOwned(UnsafeCell<Option<Control>>);
// SAFETY: written by `main` before the control interrupt is unmasked, then used only by
// `control_isr`, which cannot preempt itself.
unsafe impl Sync for IsrOwned {}
static CONTROL: IsrOwned = IsrOwned(UnsafeCell::new(None));

#[entry]
fn main() -> ! {
    hw::remove_drive();
    let reset_cause = hw::take_reset_cause();
    if let Err(step) = hw::init_watchdog().and_then(|()| hw::init_clocks()) {
        fault::init_failed(step);
    }
    let channels = rtt_init! {
        up: {
            0: { size: 8192, mode: rtt_target::ChannelMode::NoBlockSkip, name: "telemetry" }
            1: { size: 1024, mode: rtt_target::ChannelMode::NoBlockSkip, name: "log" }
        }
    };
    let (mut telemetry_channel, mut log) = channels.up;

    let mut sticky_faults = 0;
    if reset_cause & telemetry::reset::WATCHDOG != 0 {
        sticky_faults |= fault_bits::WATCHDOG_RESET;
    }
    // Boot frame first (sequence number 0), then the previous run's fault, if any.
    send(
        &mut telemetry_channel,
        &Frame::Boot {
            reset_cause,
            tick_hz: u16::try_from(driver_core::TICK_HZ).unwrap_or(u16::MAX),
            id: FIRMWARE_ID,
        },
    );
    let _ = writeln!(
        log,
        "iohil-board {} core {} reset cause {:#04x}",
        env!("CARGO_PKG_VERSION"),
        driver_core::VERSION,
        reset_cause
    );
    if let Some(previous) = fault::take_previous() {
        sticky_faults |= fault_bits::PREVIOUS_FAULT;
        fault::send_fault_frame(&previous);
        let _ = writeln!(
            log,
            "previous run ended in {} at pc {:#010x} (tick {})",
            previous.kind.name(),
            previous.pc,
            previous.tick
        );
    }

    hw::init_pins();
    hw::init_pwm();
    if let Err(step) = hw::init_adc() {
        fault::init_failed(step);
    }

    // SAFETY: the control interrupt is not yet enabled; this is the only access.
    unsafe {
        *CONTROL.0.get() = Some(Control {
            controller: Controller::new(CONFIG),
            telemetry: telemetry_channel,
            log,
            sticky_faults,
            pending_faults: 0,
            released_since_boot: false,
            last_state: State::Idle,
            last_cycles: 0,
            short_ticks: 0,
            sensor_fault: false,
        });
    }

    // SAFETY: the only place that takes the core peripherals.
    let mut core = unsafe { cortex_m::Peripherals::steal() };
    core.DCB.enable_trace();
    core.DWT.enable_cycle_counter();
    // SAFETY: priorities are set before the interrupts are unmasked; the ADC interrupt
    // preempts the control tick so no reading is lost while the controller runs.
    unsafe {
        core.NVIC.set_priority(Irq(regs::irq::ADC1_2), 0x40);
        core.NVIC.set_priority(Irq(regs::irq::TIM1_UP_TIM16), 0x80);
        NVIC::unmask(Irq(regs::irq::ADC1_2));
        NVIC::unmask(Irq(regs::irq::TIM1_UP_TIM16));
    }
    hw::refresh_watchdog();
    hw::start_pwm();
    loop {
        cortex_m::asm::wfi();
    }
}

/// ADC1/2 interrupt, 20 kHz: adds the injected sequence's readings to the tick's sums.
pub extern "C" fn adc_isr() {
    let (current, battery) = hw::take_adc_readings();
    critical_section::with(|cs| {
        let cell = ADC.borrow(cs);
        let mut acc = cell.get();
        acc.current = acc.current.wrapping_add(current);
        acc.battery = acc.battery.wrapping_add(battery);
        acc.count = acc.count.wrapping_add(1);
        cell.set(acc);
    });
}

/// TIM1 update interrupt, 1 kHz: one control tick.
pub extern "C" fn control_isr() {
    let start = DWT::cycle_count();
    hw::ack_control_tick();
    let acc = critical_section::with(|cs| ADC.borrow(cs).replace(Accumulator::default()));
    // SAFETY: see `IsrOwned`.
    let Some(control) = (unsafe { &mut *CONTROL.0.get() }) else {
        return;
    };
    let tick = TICK.load(Ordering::Relaxed).wrapping_add(1);
    TICK.store(tick, Ordering::Relaxed);

    #[cfg(feature = "test-panic")]
    if tick == 300 {
        panic!("test-panic feature: deliberate panic in the control tick");
    }

    let raw_trigger = hw::trigger_pressed();
    if !raw_trigger {
        control.released_since_boot = true;
    }
    let inputs = Inputs {
        tick,
        motor_current_ma: sensing::mean_current_ma(acc.current, acc.count),
        battery_mv: sensing::mean_battery_mv(acc.battery, acc.count),
        trigger_pressed: raw_trigger && control.released_since_boot,
    };
    let outputs = control.controller.step(&inputs);
    // Without current readings the detector and the stall protection are blind: three short
    // ticks in a row latch a sensor fault that keeps the drive off until reset.
    if acc.count < sensing::SAMPLES_PER_TICK {
        control.short_ticks = control.short_ticks.saturating_add(1);
    } else {
        control.short_ticks = 0;
    }
    if control.short_ticks >= 3 {
        control.sensor_fault = true;
        control.sticky_faults |= fault_bits::ADC_MISSING;
    }
    if control.sensor_fault {
        hw::remove_drive();
    } else {
        hw::apply(outputs.duty_permille, outputs.brake);
    }

    let mut faults = control.sticky_faults | control.pending_faults;
    if acc.count != sensing::SAMPLES_PER_TICK {
        faults |= fault_bits::ADC_MISSING;
    }
    control.pending_faults = 0;
    let mut record = TickRecord::from_step(&inputs, &outputs, faults, control.last_cycles);
    record.trigger_raw = raw_trigger;
    if !send(&mut control.telemetry, &Frame::Tick(record)) {
        control.pending_faults |= fault_bits::TELEMETRY_DROPPED;
    }
    if outputs.state != control.last_state {
        let _ = writeln!(
            control.log,
            "tick {tick}: {} -> {} ({})",
            control.last_state.name(),
            outputs.state.name(),
            outputs.stop_reason.map_or("running", |r| r.name())
        );
        control.last_state = outputs.state;
    }

    hw::refresh_watchdog();
    if hw::control_overrun() {
        control.pending_faults |= fault_bits::CONTROL_OVERRUN;
    }
    control.last_cycles = DWT::cycle_count().wrapping_sub(start);
}

/// Encodes and writes one frame with the next sequence number; false if RTT had no room (the
/// sequence number still advances, so the reader sees the gap).
fn send(channel: &mut UpChannel, frame: &Frame) -> bool {
    let mut buf = [0u8; telemetry::MAX_FRAME_LEN];
    let seq = NEXT_SEQ.load(Ordering::Relaxed);
    NEXT_SEQ.store(seq.wrapping_add(1), Ordering::Relaxed);
    let len = telemetry::encode(seq, frame, &mut buf);
    let bytes = buf.get(..len).unwrap_or(&[]);
    channel.write(bytes) == len
}
