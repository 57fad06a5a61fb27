//! Board bring-up and I/O: clock tree, watchdog, pins, PWM timer, ADC, motor outputs.
//!
//! Pin map (see the README for the wiring):
//! - PA8  TIM1_CH1  (AF6): leg A high-side gate, PWM
//! - PC13 TIM1_CH1N (AF4): leg A low-side gate, complementary with 200 ns dead time
//! - PB5  GPIO out: leg B low-side gate (on while driving or braking); leg B high side unused
//! - PB6  GPIO in, pull-up: trigger switch to ground (pressed = low)
//! - PA0  ADC1_IN1: motor current amplifier (INA240A1, 10 mOhm in-line shunt)
//! - PA1  ADC1_IN2: battery divider 1:3

use crate::regs::{adc1, dbgmcu, flash, gpio, iwdg, pwr, rcc, tim1};

/// System clock, Hz.
pub const SYSCLK_HZ: u32 = 170_000_000;
/// TIM1 counts per PWM period at 20 kHz.
pub const PWM_PERIOD_COUNTS: u32 = SYSCLK_HZ / 20_000;
/// PWM periods per control tick (TIM1 repetition counter + 1).
pub const PERIODS_PER_TICK: u32 = driver_core::sensing::SAMPLES_PER_TICK;
/// Dead time, TIM1 DTG value: 34 x 5.88 ns = 200 ns.
const DEAD_TIME_DTG: u32 = 34;
/// Independent watchdog reload: (119 + 1) x 4 / 32 kHz = 15 ms (16.3 ms at the slowest LSI,
/// 29.5 kHz), inside SR-12's 20 ms.
const IWDG_RELOAD: u32 = 119;

const LEG_B_LOW_PIN: u32 = 5;
const TRIGGER_PIN: u32 = 6;
/// Bounded waits on ready flags, in register reads (6-8 cycles each): at most about 10 ms at
/// the 16 MHz reset clock, so a part that never sets a flag is recorded as an init failure
/// before the 15 ms watchdog fires; PLL lock (~100 us), ADC calibration and ready (a few us)
/// take a small fraction of it.
const WAIT_READS: u32 = 20_000;

/// A bring-up step that did not complete: the firmware refuses to drive.
#[derive(Clone, Copy, Debug)]
pub enum InitError {
    /// Flash wait states not accepted.
    FlashLatency = 1,
    /// PLL did not lock.
    PllLock = 2,
    /// System clock did not switch to the PLL.
    ClockSwitch = 3,
    /// Watchdog registers did not update.
    Watchdog = 4,
    /// ADC calibration did not finish.
    AdcCalibration = 5,
    /// ADC did not become ready.
    AdcReady = 6,
}

/// Reads and clears the reset flags; returns `driver_core::telemetry::reset` bits.
pub fn take_reset_cause() -> u8 {
    use driver_core::telemetry::reset;
    let csr = rcc::CSR.read();
    let mut cause = 0;
    if csr & rcc::CSR_BORRSTF != 0 {
        cause |= reset::POWER_ON;
    }
    let other_flags = rcc::CSR_BORRSTF
        | rcc::CSR_SFTRSTF
        | rcc::CSR_IWDGRSTF
        | rcc::CSR_WWDGRSTF
        | rcc::CSR_LPWRRSTF
        | rcc::CSR_OBLRSTF;
    if csr & rcc::CSR_PINRSTF != 0 && csr & other_flags == 0 {
        // Every internal reset also drives the pin; count the pin only when nothing else
        // caused it.
        cause |= reset::PIN;
    }
    if csr & rcc::CSR_SFTRSTF != 0 {
        cause |= reset::SOFTWARE;
    }
    if csr & rcc::CSR_IWDGRSTF != 0 {
        cause |= reset::WATCHDOG;
    }
    if csr & (rcc::CSR_WWDGRSTF | rcc::CSR_LPWRRSTF | rcc::CSR_OBLRSTF) != 0 {
        cause |= reset::OTHER;
    }
    rcc::CSR.modify(0, rcc::CSR_RMVF);
    cause
}

/// HSI16 / 4 x 85 / 2 = 170 MHz in range-1 boost mode, 4 flash wait states (RM0440 6.1.5,
/// 7.2.7: the AHB runs at half speed for the switch, then full speed after 1 us).
pub fn init_clocks() -> Result<(), InitError> {
    rcc::APB1ENR1.modify(0, rcc::APB1ENR1_PWR);
    pwr::CR5.modify(pwr::CR5_R1MODE, 0);
    flash::ACR.modify(
        flash::ACR_LATENCY_MASK,
        4 | flash::ACR_PRFTEN | flash::ACR_ICEN | flash::ACR_DCEN,
    );
    if !flash::ACR.wait(flash::ACR_LATENCY_MASK, 4, WAIT_READS) {
        return Err(InitError::FlashLatency);
    }
    // PLLM = 4 (field 3), PLLN = 85, PLLR = 2 (field 0), output R enabled.
    rcc::PLLCFGR.write(rcc::PLLCFGR_SRC_HSI16 | (3 << 4) | (85 << 8) | rcc::PLLCFGR_REN);
    rcc::CR.modify(0, rcc::CR_PLLON);
    if !rcc::CR.wait(rcc::CR_PLLRDY, rcc::CR_PLLRDY, WAIT_READS) {
        return Err(InitError::PllLock);
    }
    rcc::CFGR.modify(rcc::CFGR_HPRE_MASK, rcc::CFGR_HPRE_DIV2);
    rcc::CFGR.modify(rcc::CFGR_SW_MASK, rcc::CFGR_SW_PLL);
    if !rcc::CFGR.wait(rcc::CFGR_SWS_MASK, rcc::CFGR_SWS_PLL, WAIT_READS) {
        return Err(InitError::ClockSwitch);
    }
    cortex_m::asm::delay(200); // >= 1 us at 85 MHz
    rcc::CFGR.modify(rcc::CFGR_HPRE_MASK, 0);
    Ok(())
}

/// Starts the independent watchdog (15 ms) and freezes it and TIM1 while a debugger halts the
/// core. Once started it cannot be stopped; only [`refresh_watchdog`] keeps the MCU running.
pub fn init_watchdog() -> Result<(), InitError> {
    dbgmcu::APB1FZR1.modify(0, dbgmcu::APB1FZR1_IWDG_STOP);
    dbgmcu::APB2FZR.modify(0, dbgmcu::APB2FZR_TIM1_STOP);
    iwdg::KR.write(iwdg::KEY_START);
    iwdg::KR.write(iwdg::KEY_UNLOCK);
    iwdg::PR.write(0);
    iwdg::RLR.write(IWDG_RELOAD);
    if !iwdg::SR.wait(0b111, 0, WAIT_READS) {
        return Err(InitError::Watchdog);
    }
    refresh_watchdog();
    Ok(())
}

/// Reloads the watchdog counter.
#[inline(always)]
pub fn refresh_watchdog() {
    iwdg::KR.write(iwdg::KEY_REFRESH);
}

/// Pins: gates low first, then alternate functions; analog inputs; trigger with pull-up.
pub fn init_pins() {
    rcc::AHB2ENR.modify(
        0,
        rcc::AHB2ENR_GPIOA | rcc::AHB2ENR_GPIOB | rcc::AHB2ENR_GPIOC,
    );
    // PB5 output, driven low before it becomes an output.
    gpio::GPIOB.bsrr().write(1 << (LEG_B_LOW_PIN + 16));
    gpio::GPIOB
        .moder()
        .modify(0b11 << (2 * LEG_B_LOW_PIN), 0b01 << (2 * LEG_B_LOW_PIN));
    // PB6 input with pull-up.
    gpio::GPIOB
        .pupdr()
        .modify(0b11 << (2 * TRIGGER_PIN), 0b01 << (2 * TRIGGER_PIN));
    gpio::GPIOB.moder().modify(0b11 << (2 * TRIGGER_PIN), 0);
    // PA0, PA1 analog (their reset state; stated so the emulated rig sees it).
    gpio::GPIOA.moder().modify(0, 0b1111);
    // PA8 AF6 (TIM1_CH1), PC13 AF4 (TIM1_CH1N), very high speed.
    gpio::GPIOA.afrh().modify(0xF, 6);
    gpio::GPIOA.ospeedr().modify(0, 0b11 << 16);
    gpio::GPIOA.moder().modify(0b11 << 16, 0b10 << 16);
    gpio::GPIOC.afrh().modify(0xF << 20, 4 << 20);
    gpio::GPIOC.ospeedr().modify(0, 0b11 << 26);
    gpio::GPIOC.moder().modify(0b11 << 26, 0b10 << 26);
}

/// TIM1: 20 kHz edge-aligned PWM on CH1/CH1N with dead time, outputs off (MOE clear) until
/// the controller commands drive; CH4 compare at mid-period triggers the ADC every period; an
/// update interrupt every [`PERIODS_PER_TICK`] periods is the 1 kHz control tick.
pub fn init_pwm() {
    rcc::APB2ENR.modify(0, rcc::APB2ENR_TIM1);
    tim1::PSC.write(0);
    tim1::ARR.write(PWM_PERIOD_COUNTS - 1);
    tim1::RCR.write(PERIODS_PER_TICK - 1);
    tim1::CCR1.write(0);
    tim1::CCR4.write(PWM_PERIOD_COUNTS / 2);
    // CH1 compare preload OFF: a new duty (above all the brake's 0) takes effect at once. With
    // preload on it would wait for the next update event, which the repetition counter makes
    // a whole control tick (1 ms) away.
    tim1::CCMR1.write(tim1::OCM_PWM1 << 4);
    // CH4 in PWM mode 2: OC4REF rises at the CCR4 match (mid-period), so the ADC trigger is
    // mid-period whether the ADC takes the compare event or the rising edge of OC4REF.
    tim1::CCMR2.write((tim1::OCM_PWM2 << 12) | (1 << 11));
    tim1::CCER.write(tim1::CCER_CC1E | tim1::CCER_CC1NE);
    // Off-state: outputs driven to their idle level (low, gates off) while MOE is clear.
    tim1::BDTR.write(DEAD_TIME_DTG | tim1::BDTR_OSSI | tim1::BDTR_OSSR);
    tim1::CR1.write(tim1::CR1_ARPE);
    tim1::EGR.write(tim1::EGR_UG);
    tim1::SR.write(0);
    tim1::DIER.write(tim1::DIER_UIE);
}

/// Starts the timer (and with it the ADC triggers and the control tick).
pub fn start_pwm() {
    tim1::CR1.modify(0, tim1::CR1_CEN);
}

/// ADC1: synchronous clock HCLK/4 (42.5 MHz), regulator, calibration, then an injected
/// sequence of IN1 (current) and IN2 (battery), 24.5-cycle sampling, triggered by TIM1_CC4,
/// interrupt at end of sequence.
pub fn init_adc() -> Result<(), InitError> {
    rcc::AHB2ENR.modify(0, rcc::AHB2ENR_ADC12);
    adc1::COMMON_CCR.modify(0b11 << 16, adc1::CCR_CKMODE_HCLK_DIV4);
    adc1::CR.modify(adc1::CR_DEEPPWD, 0);
    adc1::CR.modify(0, adc1::CR_ADVREGEN);
    cortex_m::asm::delay(SYSCLK_HZ / 50_000); // regulator start-up, 20 us
    adc1::CR.modify(0, adc1::CR_ADCAL);
    if !adc1::CR.wait(adc1::CR_ADCAL, 0, WAIT_READS) {
        return Err(InitError::AdcCalibration);
    }
    adc1::SMPR1.write((0b011 << 3) | (0b011 << 6));
    adc1::ISR.write(adc1::ISR_ADRDY);
    adc1::CR.modify(0, adc1::CR_ADEN);
    if !adc1::ISR.wait(adc1::ISR_ADRDY, adc1::ISR_ADRDY, WAIT_READS) {
        return Err(InitError::AdcReady);
    }
    // JL = 1 (two conversions), rising edge of TIM1_CC4, JSQ1 = IN1, JSQ2 = IN2.
    adc1::JSQR.write(1 | (adc1::JEXTSEL_TIM1_CC4 << 2) | (0b01 << 7) | (1 << 9) | (2 << 15));
    adc1::ISR.write(adc1::ISR_JEOS);
    adc1::IER.write(adc1::IER_JEOSIE);
    adc1::CR.modify(0, adc1::CR_JADSTART);
    Ok(())
}

/// One injected sequence's readings (current, battery), acknowledging the interrupt.
#[inline(always)]
pub fn take_adc_readings() -> (u32, u32) {
    let current = adc1::JDR1.read() & 0xFFF;
    let battery = adc1::JDR2.read() & 0xFFF;
    adc1::ISR.write(adc1::ISR_JEOS);
    (current, battery)
}

/// Raw trigger level (pressed = pin low).
#[inline(always)]
pub fn trigger_pressed() -> bool {
    gpio::GPIOB.idr().read() & (1 << TRIGGER_PIN) == 0
}

/// Applies the controller's command: PWM on leg A with leg B's low side on (drive), both
/// low sides on (brake: the winding is shorted), or every gate off (idle).
pub fn apply(duty_permille: u16, brake: bool) {
    if brake {
        tim1::CCR1.write(0);
        gpio::GPIOB.bsrr().write(1 << LEG_B_LOW_PIN);
        tim1::BDTR.modify(0, tim1::BDTR_MOE);
    } else if duty_permille > 0 {
        let duty = u32::from(duty_permille.min(driver_core::DUTY_FULL_SCALE));
        tim1::CCR1.write(duty * PWM_PERIOD_COUNTS / u32::from(driver_core::DUTY_FULL_SCALE));
        gpio::GPIOB.bsrr().write(1 << LEG_B_LOW_PIN);
        tim1::BDTR.modify(0, tim1::BDTR_MOE);
    } else {
        remove_drive();
    }
}

/// The safe state: every gate off. Safe to call from any context, also before bring-up (the
/// writes are ignored while a clock is off, and the pins are then inputs pulled down by the
/// gate driver).
#[inline(always)]
pub fn remove_drive() {
    tim1::BDTR.modify(tim1::BDTR_MOE, 0);
    tim1::CCR1.write(0);
    gpio::GPIOB.bsrr().write(1 << (LEG_B_LOW_PIN + 16));
}

/// Whether another control tick became due while this one ran (the update flag is set again).
#[inline(always)]
pub fn control_overrun() -> bool {
    tim1::SR.read() & tim1::SR_UIF != 0
}

/// Acknowledges the control tick interrupt.
#[inline(always)]
pub fn ack_control_tick() {
    tim1::SR.write(!tim1::SR_UIF);
}
