import Foundation

extension JobDTO {
    /// One line of progress for people: "42% (1.5G of 4G), 310M/s, ETA 8 s", or "1200 extents, 90
    /// extents/s" when the total is unknown. Plain text: the CLI prints it as is and the status page
    /// escapes it, so both say the same thing in the same words.
    public var progressSummary: String {
        let bytes = unit == "bytes"
        func amount(_ value: UInt64) -> String { bytes ? ByteSize.format(value) : "\(value) \(unit)" }
        let speed = bytes ? ByteSize.format(UInt64(max(0, rate))) + "/s" : String(format: "%.0f %@/s", rate, unit)
        let eta = etaSeconds.map { String(format: ", ETA %.0f s", $0) } ?? ""
        guard total > 0 else { return "\(amount(done)), \(speed)\(eta)" }
        let percent = min(100, Double(done) / Double(total) * 100)
        return String(format: "%.0f%%", percent) + " (\(amount(done)) of \(amount(total))), \(speed)\(eta)"
    }
}
