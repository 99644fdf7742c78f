//! Periods and local days for reports.
