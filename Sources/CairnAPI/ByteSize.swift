/// Human sizes for the CLI and messages: "10G", "512M", "64k", "1.5T", plain bytes. Binary units
/// (K = 1024), as qemu-img and LVM use them.
public enum ByteSize {
    static let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50]

    /// Parses a size; nil when it is not one. Accepts an optional unit (K, M, G, T, P) with an optional
    /// "B" or "iB" after it.
    public static func parse(_ text: String) -> UInt64? {
        var body = Array(text.uppercased().filter { $0 != " " })
        if body.count >= 3, body.suffix(2) == ["I", "B"], units[body[body.count - 3]] != nil {
            body.removeLast(2)
        } else if body.count >= 2, body.last == "B", units[body[body.count - 2]] != nil {
            body.removeLast()
        }
        var multiplier: UInt64 = 1
        if let last = body.last, let unit = units[last] {
            multiplier = unit
            body.removeLast()
        }
        let number = String(body)
        guard !number.isEmpty else { return nil }
        if let whole = UInt64(number) {
            let (value, overflow) = whole.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : value
        }
        // Fractions only as plain decimals with a unit ("1.5G"): no exponents, hex or signs.
        guard multiplier > 1, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            number.filter({ $0 == "." }).count == 1, let fraction = Double(number)
        else { return nil }
        let value = fraction * Double(multiplier)
        guard value < 1.8e19, value == value.rounded() else { return nil }
        return UInt64(value)
    }

    /// "1.5 GiB", "512 B".
    public static func format(_ bytes: UInt64) -> String {
        let names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var index = 0
        while value >= 1024 && index < names.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(names[index])"
    }
}
