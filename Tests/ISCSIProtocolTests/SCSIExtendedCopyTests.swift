import ISCSIProtocol
import NIOCore
import Testing

/// EXTENDED COPY parameter lists as qemu and libiscsi build them, and every refusal SPC-4 gives them.
@Suite struct SCSIExtendedCopyTests {
    /// An 0xE4 identification descriptor naming the NAA locally assigned identifier `identifier`.
    static func target(_ identifier: UInt64, type: UInt8 = 0xE4, deviceType: UInt8 = 0, blockSize: UInt32 = 512) -> [UInt8] {
        var descriptor = [UInt8](repeating: 0, count: 32)
        descriptor[0] = type
        descriptor[1] = deviceType
        descriptor[4] = 0x01  // Binary.
        descriptor[5] = 0x03  // Association 0 (logical unit), NAA.
        descriptor[7] = 8
        let naa = (UInt64(3) << 60) | identifier
        for index in 0..<8 { descriptor[8 + index] = UInt8(truncatingIfNeeded: naa >> (56 - 8 * UInt64(index))) }
        descriptor[29] = UInt8(blockSize >> 16 & 0xFF)
        descriptor[30] = UInt8(blockSize >> 8 & 0xFF)
        descriptor[31] = UInt8(blockSize & 0xFF)
        return descriptor
    }

    /// A block-to-block segment (type 0x02, 28 bytes).
    static func segment(source: UInt16, destination: UInt16, blocks: UInt16, from: UInt64, to: UInt64, type: UInt8 = 0x02)
        -> [UInt8]
    {
        var bytes: [UInt8] = [type, 0, 0, 24, UInt8(source >> 8), UInt8(source & 0xFF), UInt8(destination >> 8)]
        bytes += [UInt8(destination & 0xFF), 0, 0, UInt8(blocks >> 8), UInt8(blocks & 0xFF)]
        for value in [from, to] {
            for index in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64(index)))) }
        }
        return bytes
    }

    static func list(id: UInt8 = 1, usage: UInt8 = 0, targets: [[UInt8]], segments: [[UInt8]], inline: UInt32 = 0)
        -> ByteBuffer
    {
        let targetBytes = targets.flatMap { $0 }
        let segmentBytes = segments.flatMap { $0 }
        var buffer = ByteBuffer()
        buffer.writeInteger(id)
        buffer.writeInteger(usage << 3)
        buffer.writeInteger(UInt16(targetBytes.count))
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(segmentBytes.count))
        buffer.writeInteger(inline)
        buffer.writeBytes(targetBytes)
        buffer.writeBytes(segmentBytes)
        return buffer
    }

    @Test func qemusListParses() throws {
        // qemu: two targets (source, destination), one segment, LIST ID USAGE 2 (no results held).
        let data = Self.list(
            usage: 2, targets: [Self.target(0x1234), Self.target(0x5678)],
            segments: [Self.segment(source: 0, destination: 1, blocks: 4096, from: 8, to: 16)])
        let list = try #require(try SCSIExtendedCopyList.parse(data))
        #expect(list.targets.map(\.naaIdentifier) == [0x1234, 0x5678])
        #expect(list.targets.allSatisfy { $0.blockSize == 512 && $0.codeSet == 1 })
        #expect(list.segments == [.init(source: 0, destination: 1, blocks: 4096, sourceLBA: 8, destinationLBA: 16)])
        #expect(!list.holdsResults)
        #expect(try SCSIExtendedCopyList.parse(ByteBuffer()) == nil)
    }

    @Test func refusalsCarryTheirSense() {
        let one = [Self.target(1)]
        let seg = [Self.segment(source: 0, destination: 0, blocks: 1, from: 0, to: 1)]
        var truncated = Self.list(targets: one, segments: seg)
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        let cases: [(String, ByteBuffer, SCSISense)] = [
            ("short header", ByteBuffer(bytes: [1, 0, 0]), .parameterListLengthError),
            ("truncated segment", truncated, .parameterListLengthError),
            ("FC N_Port target", Self.list(targets: [Self.target(1, type: 0xE0)], segments: seg), .unsupportedTargetDescriptorType),
            ("tape device", Self.list(targets: [Self.target(1, deviceType: 1)], segments: seg), .unsupportedTargetDescriptorType),
            (
                "stream segment", Self.list(targets: one, segments: [Self.segment(source: 0, destination: 0, blocks: 1, from: 0, to: 1, type: 0x03)]),
                .unsupportedSegmentDescriptorType
            ),
            (
                "too many targets",
                Self.list(targets: Array(repeating: Self.target(1), count: Int(SCSICopyLimits.maximumTargetDescriptors) + 1), segments: seg),
                .tooManyTargetDescriptors
            ),
            (
                "too many segments",
                Self.list(targets: one, segments: Array(repeating: seg[0], count: Int(SCSICopyLimits.maximumSegmentDescriptors) + 1)),
                .tooManySegmentDescriptors
            ),
            (
                "descriptors over the list length",
                Self.list(targets: Array(repeating: Self.target(1), count: 9), segments: Array(repeating: seg[0], count: 28)),
                .parameterListLengthError
            ),
            ("inline data", Self.list(targets: one, segments: seg, inline: 4) + [0, 0, 0, 0], .invalidFieldInParameterList),
        ]
        for (name, data, sense) in cases {
            #expect(throws: sense, "\(name)") { try SCSIExtendedCopyList.parse(data) }
        }
    }

    @Test func copyStatusAndOperatingParameters() {
        let status = SCSICopyStatus(succeeded: true, segmentsProcessed: 1, bytesCopied: 1 << 20).parameterData
        #expect(Array(status.readableBytesView) == [0, 0, 0, 8, 1, 0, 1, 0, 0, 0x10, 0, 0])
        let parameters = SCSIReceiveCopyResults.operatingParametersData
        #expect(parameters.readableBytes == 46)
        #expect(parameters.getInteger(at: 0, as: UInt32.self) == 42)
        #expect(parameters.getInteger(at: 8, as: UInt16.self) == SCSICopyLimits.maximumTargetDescriptors)
        #expect(parameters.getInteger(at: 10, as: UInt16.self) == SCSICopyLimits.maximumSegmentDescriptors)
        #expect(parameters.getInteger(at: 43, as: UInt8.self) == 2)
        #expect(Array(parameters.readableBytesView.suffix(2)) == [0x02, 0xE4])
    }

    @Test func inquiryAdvertisesThirdPartyCopy() throws {
        let profile = SCSIDeviceProfile(blockCount: 1 << 20, readOnly: false, serial: "s", naaIdentifier: 0x42)
        let standard = try profile.inquiry(vitalProductData: false, page: 0)
        #expect(standard.getInteger(at: 5, as: UInt8.self)! & 0x08 != 0)  // 3PC.
        let pages = try profile.inquiry(vitalProductData: true, page: 0)
        #expect(Array(pages.readableBytesView.dropFirst(4)).contains(0x8F))
        let page = try profile.inquiry(vitalProductData: true, page: 0x8F)
        let bytes = Array(page.readableBytesView)
        #expect(bytes[1] == 0x8F)
        #expect(Int(bytes[2]) << 8 | Int(bytes[3]) == bytes.count - 4)
        // Supported Commands descriptor: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (0x00, 0x03).
        #expect(bytes[4...5] == [0x00, 0x01])
        #expect(Array(bytes[9..<16]) == [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03])
        // Every descriptor's length keeps the walk inside the page.
        var at = 4
        while at < bytes.count { at += 4 + (Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])) }
        #expect(at == bytes.count)
    }
}

extension ByteBuffer {
    static func + (lhs: ByteBuffer, rhs: [UInt8]) -> ByteBuffer {
        var buffer = lhs
        buffer.writeBytes(rhs)
        return buffer
    }
}
